"""rlm-kernel: a Jupyter kernel that is the REPL of a Recursive Language Model.

``from rlm_kernel import RLM`` runs an RLM in any Python process; the ``rlm`` kernel makes every
root-model step and every sub-call a notebook cell. See README.md and docs/architecture.md.
"""

from .api import RLM, RunResult
from .config import RLMConfig
from .engine import Controller
from .errors import (
    BudgetExceeded,
    ConfigError,
    LLMBatchError,
    ModelCallError,
    ReplayMissError,
    RLMError,
    RunStopped,
    StepTimeout,
)
from .trajectory import ContextInfo, Run, Step, SubCall, Usage

__version__ = "0.1.0"

__all__ = [
    "RLM", "RunResult", "RLMConfig", "Controller", "Run", "Step", "SubCall", "Usage", "ContextInfo",
    "RLMError", "ConfigError", "ModelCallError", "LLMBatchError", "ReplayMissError",
    "BudgetExceeded", "StepTimeout", "RunStopped", "__version__",
]

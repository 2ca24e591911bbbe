"""rlm-kernel: a Jupyter kernel that is the REPL of a Recursive Language Model.

``from rlm_kernel import RLM`` runs an RLM in any Python process; the ``rlm`` kernel makes every
root-model step and every sub-call a notebook cell. See README.md and docs/architecture.md.

The names below are imported when first used (PEP 562): ``rlm-kernel`` commands and the kernel
import only the modules they need, so the engine and the model client do not delay a command's
kernel launch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Public name -> the module that defines it.
_WHERE = {
    "RLM": "api", "RunResult": "api", "RLMConfig": "config", "Controller": "engine",
    **dict.fromkeys(["RLMError", "ConfigError", "ModelCallError", "LLMBatchError",
                     "ReplayMissError", "BudgetExceeded", "StepTimeout", "RunStopped"], "errors"),
    **dict.fromkeys(["Run", "Step", "SubCall", "Usage", "ContextInfo"], "trajectory"),
}

__all__ = [
    "RLM", "RunResult", "RLMConfig", "Controller", "Run", "Step", "SubCall", "Usage", "ContextInfo",
    "RLMError", "ConfigError", "ModelCallError", "LLMBatchError", "ReplayMissError",
    "BudgetExceeded", "StepTimeout", "RunStopped", "__version__",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'rlm_kernel' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))

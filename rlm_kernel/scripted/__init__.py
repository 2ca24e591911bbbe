"""The scripted demonstration model: deterministic rules, not an LLM, speaking OpenAI chat completions.

It is the embedded default when no API key and no base URL are set, and the double every test and
benchmark runs against: in-process through :class:`ScriptedTransport`, or over loopback HTTP
through :class:`ScriptedServer` (``rlm-kernel serve-scripted``). Both share
:meth:`ScriptedModel.handle`. Its root policies play the paper's strategies (peek, regex,
partition + ``llm_batch``, aggregate, recurse) for the task families listed in
:mod:`rlm_kernel.scripted.policies`, and say plainly when a query is beyond them.
"""

from __future__ import annotations

from . import task_policies  # noqa: E402,F401,I001 - registers the task families' policies
from .model import FaultPlan, Reply, ScriptedModel, ScriptedStats
from .policies import (
    ROOT_FALLBACK_ANSWER,
    SUB_FALLBACK_ANSWER,
    RootView,
    register_root_policy,
    register_sub_policy,
)
from .server import ScriptedServer
from .transport import ScriptedTransport
from .wire import DEFAULT_MODELS, NOT_AN_LLM, SCRIPTED_BANNER, SYSTEM_FINGERPRINT

__all__ = [
    "ScriptedModel",
    "ScriptedServer",
    "ScriptedTransport",
    "ScriptedStats",
    "FaultPlan",
    "Reply",
    "RootView",
    "register_root_policy",
    "register_sub_policy",
    "ROOT_FALLBACK_ANSWER",
    "SUB_FALLBACK_ANSWER",
    "DEFAULT_MODELS",
    "NOT_AN_LLM",
    "SCRIPTED_BANNER",
    "SYSTEM_FINGERPRINT",
    "ROOT_MODEL",
    "SUB_MODEL",
]

ROOT_MODEL, SUB_MODEL = DEFAULT_MODELS

# Registered on import: custom tools and persistent sessions, the reference runtime's (rlms)
# convention and the best-effort answer, scripted-stepwise (another strategy for the same counting
# task, so a fork that changes the root model changes the run), and the image task (number cards
# on pages).
from . import feature_policies  # noqa: E402,F401,I001
from . import image_policy, rlms_policy, stepwise_policy  # noqa: E402,F401,I001

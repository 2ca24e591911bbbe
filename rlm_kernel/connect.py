"""The model client for a configuration: the endpoint it names, or the embedded scripted model.

Why a module of its own: :mod:`rlm_kernel.lm` is the production client and must not know the
scripted model exists (it sits below it); the library, the kernel and the eval runner all need
"a client for this config, scripted when no endpoint is set", so that choice is made once, here,
above both.
"""

from __future__ import annotations

from typing import Any

from .config import RLMConfig
from .lm import LMClient

__all__ = ["open_client"]


def open_client(config: RLMConfig, **kwargs: Any) -> LMClient:
    """An :class:`LMClient` for ``config``; with no key and no base URL, one whose requests the
    scripted demonstration model answers in-process (real HTTP messages, no socket)."""
    if config.scripted and kwargs.get("transport") is None:
        from .scripted import ScriptedModel, ScriptedTransport

        kwargs["transport"] = ScriptedTransport(ScriptedModel(latency=config.scripted_latency))
    return LMClient(config, **kwargs)

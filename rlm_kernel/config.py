"""Every knob of a run, as traitlets (Jupyter's configuration system), with env-var defaults.

``RLMConfig`` is read from ``c.RLMConfig.*`` / ``c.RLMKernel.*`` config files, from the environment
(``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``RLM_MODEL``, ``RLM_SUB_MODEL``, ``RLM_CONCURRENCY``) and
from keyword arguments. The API key is a secret: it is never part of :meth:`RLMConfig.settings`,
never displayed (:meth:`RLMConfig.describe` masks it) and scrubbed from error messages (:func:`redact`).
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import Bool, Dict, Float, Integer, Unicode, validate
from traitlets.config import Configurable

from .errors import ConfigError

__all__ = ["RLMConfig", "redact", "SCRIPTED_ROOT", "SCRIPTED_SUB"]

SCRIPTED_ROOT = "scripted-root"
SCRIPTED_SUB = "scripted-sub"
_SECRET_NAMES = ("api_key",)
_known_secrets: set[str] = set()


def redact(text: str) -> str:
    """Replace every API key this process has seen (and its first 8+ chars) with '***'."""
    for secret in _known_secrets:
        if len(secret) >= 8 and secret in text:
            text = text.replace(secret, "***")
        # Providers echo keys partly ("sk-abc1***wxyz"): hide any long-enough prefix too.
        if len(secret) >= 12 and secret[:12] in text:
            text = text.replace(secret[:12], "***")
    return text


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not an integer; unset it or give a whole number") from exc


class RLMConfig(Configurable):
    """Models, endpoint, budgets and limits of RLM runs."""

    model = Unicode("", help="Root model name (env RLM_MODEL). Empty: the scripted model.").tag(config=True)
    sub_model = Unicode(
        "", help="Model for llm()/llm_batch() (env RLM_SUB_MODEL). Empty: same as model."
    ).tag(config=True)
    base_url = Unicode(
        "", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (env OPENAI_BASE_URL)."
    ).tag(config=True)
    api_key = Unicode("", help="API key (env OPENAI_API_KEY). Never displayed or recorded.").tag(config=True)

    max_steps = Integer(30, help="Root-model steps per run.").tag(config=True)
    max_depth = Integer(1, help="Recursion depth: rlm() inside a run at this depth becomes llm().").tag(config=True)
    max_subcalls = Integer(0, help="Sub-calls per run tree (0: unlimited).").tag(config=True)
    max_tokens = Integer(0, help="Prompt+completion tokens per run tree (0: unlimited).").tag(config=True)
    max_cost = Float(0.0, help="USD per run tree from `prices` (0: unlimited).").tag(config=True)
    max_wall_time = Float(0.0, help="Seconds per run (0: unlimited).").tag(config=True)
    step_timeout = Float(300.0, help="Seconds one step's code may run (0: no limit).").tag(config=True)

    concurrency = Integer(16, help="Model calls in flight at once (env RLM_CONCURRENCY).").tag(config=True)
    requests_per_minute = Integer(0, help="Rate limit on requests (0: none).").tag(config=True)
    tokens_per_minute = Integer(0, help="Rate limit on estimated prompt tokens (0: none).").tag(config=True)
    max_retries = Integer(4, help="The openai client's retries (backoff) on 429/5xx/timeouts.").tag(config=True)
    call_timeout = Float(120.0, help="Seconds per model request attempt.").tag(config=True)
    fast_transport = Bool(
        True, help="HTTP/1.1 keep-alive transport tuned for many parallel calls; False: httpx2's own."
    ).tag(config=True)
    temperature = Float(-1.0, help="Sampling temperature (negative: the provider's default).").tag(config=True)
    root_max_tokens = Integer(0, help="max_tokens for root replies (0: provider default).").tag(config=True)

    output_chars = Integer(20_000, help="Step output shown to the root model (head+tail).").tag(config=True)
    sub_window = Integer(100_000, help="Characters the root model is told a sub-call can read.").tag(config=True)
    record_prompt_chars = Integer(
        2_000, help="Sub-call prompts up to this length are kept whole in notebooks; longer: preview+hash."
    ).tag(config=True)
    keep_prompt_chars = Integer(
        64_000_000, help="Full sub-call prompts kept in memory this session, newest first (for an "
        "unedited %%llm --call cell to re-send one exactly); 0 keeps none."
    ).tag(config=True)
    cache = Bool(True, help="Reuse responses for identical (model, messages, params).").tag(config=True)
    subcalls_enabled = Bool(
        True, help="llm()/llm_batch()/rlm() work in the REPL; False is the paper's no-sub-call ablation."
    ).tag(config=True)
    prices = Dict(
        {}, help='USD per 1M tokens: {"model": {"prompt": 2.5, "completion": 10, "cached": 1.25}}.'
    ).tag(config=True)

    scripted_latency = Float(0.0, help="Injected latency (s) of the embedded scripted model.").tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        env: dict[str, Any] = {
            "model": os.environ.get("RLM_MODEL", ""),
            "sub_model": os.environ.get("RLM_SUB_MODEL", ""),
            "base_url": os.environ.get("OPENAI_BASE_URL", ""),
            "api_key": os.environ.get("OPENAI_API_KEY", ""),
            "concurrency": _env_int("RLM_CONCURRENCY", 16),
        }
        for key, value in env.items():
            kwargs.setdefault(key, value)
        super().__init__(**{k: v for k, v in kwargs.items() if v is not None})

    @validate("api_key")
    def _remember_secret(self, proposal: dict[str, Any]) -> str:
        if proposal["value"]:
            _known_secrets.add(proposal["value"])
        return proposal["value"]

    @validate("base_url")
    def _check_base_url(self, proposal: dict[str, Any]) -> str:
        url = proposal["value"].strip()
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base_url {url!r} is not an http(s) URL; use e.g. http://localhost:8000/v1 "
                "(vLLM), http://localhost:11434/v1 (Ollama) or https://api.openai.com/v1"
            )
        return url

    @validate("concurrency")
    def _check_concurrency(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1:
            raise ConfigError(f"concurrency must be at least 1, not {proposal['value']}")
        return proposal["value"]

    @validate("max_steps", "max_depth")
    def _check_positive(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < (0 if proposal["trait"].name == "max_depth" else 1):
            raise ConfigError(f"{proposal['trait'].name} cannot be {proposal['value']}")
        return proposal["value"]

    @property
    def scripted(self) -> bool:
        """No key and no endpoint: use the embedded scripted demonstration model."""
        return not self.api_key and not self.base_url

    @property
    def root_model(self) -> str:
        if self.model:
            return self.model
        if self.scripted:
            return SCRIPTED_ROOT
        raise ConfigError(
            "no model named: pass --model / set RLM_MODEL (e.g. gpt-5-mini, or the name your "
            "vLLM/Ollama server serves)"
        )

    @property
    def subcall_model(self) -> str:
        if self.sub_model:
            return self.sub_model
        if self.scripted and not self.model:
            return SCRIPTED_SUB
        return self.root_model

    def settings(self) -> dict[str, Any]:
        """Every setting except secrets: safe to record in a notebook."""
        out = {name: getattr(self, name) for name in self.trait_names(config=True)}
        for name in _SECRET_NAMES:
            out.pop(name, None)
        out["scripted"] = self.scripted
        return out

    def describe(self) -> dict[str, Any]:
        """Settings for display: secrets shown only as set/unset."""
        out = self.settings()
        out["api_key"] = "set (hidden)" if self.api_key else "not set"
        return out

    def copy(self, **changes: Any) -> RLMConfig:
        values = {name: getattr(self, name) for name in self.trait_names(config=True)}
        values.update({k: v for k, v in changes.items() if v is not None})
        return RLMConfig(**values)

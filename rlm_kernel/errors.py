"""One exception type per way a call or a run can stop, so users can catch exactly what they mean."""

from __future__ import annotations

__all__ = [
    "RLMError",
    "ConfigError",
    "ModelCallError",
    "AuthenticationFailed",
    "ModelNotFound",
    "RateLimited",
    "ModelTimeout",
    "EndpointUnreachable",
    "BadRequest",
    "ContextWindowExceeded",
    "ServerError",
    "InvalidResponse",
    "LLMBatchError",
    "ReplayMissError",
    "BudgetExceeded",
    "StepBudgetExceeded",
    "DepthBudgetExceeded",
    "SubcallBudgetExceeded",
    "TokenBudgetExceeded",
    "CostBudgetExceeded",
    "WallTimeExceeded",
    "StepTimeout",
    "RunStopped",
]


class RLMError(Exception):
    """Base class of every error rlm-kernel raises on purpose."""


class ConfigError(RLMError):
    """A setting is missing or invalid; the message says which and how to fix it."""


class ModelCallError(RLMError):
    """A model call failed after the client's bounded retries (provider down, bad model name...).

    ``status_code`` is the HTTP status when the endpoint answered one (None for timeouts and
    connection failures); the subclass says which kind of failure it was, so callers catch what
    they mean instead of reading the message.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AuthenticationFailed(ModelCallError):
    """The endpoint rejected the API key (HTTP 401/403)."""


class ModelNotFound(ModelCallError):
    """The endpoint does not serve the named model (HTTP 404)."""


class RateLimited(ModelCallError):
    """The endpoint kept answering HTTP 429 through every retry."""


class ModelTimeout(ModelCallError):
    """No complete answer within ``call_timeout`` on any attempt."""


class EndpointUnreachable(ModelCallError):
    """No connection to the endpoint could be made (wrong URL, server down)."""


class BadRequest(ModelCallError):
    """The endpoint refused the request as malformed (HTTP 400/422); never retried."""


class ContextWindowExceeded(BadRequest):
    """The prompt does not fit the model's context window."""


class ServerError(ModelCallError):
    """The endpoint failed (HTTP 5xx) through every retry."""


class InvalidResponse(ModelCallError):
    """HTTP 200 with a body that is not a usable chat completion (error object, no choices, no
    content): never cached, so a later identical call asks again."""


class LLMBatchError(ModelCallError):
    """Some calls of an ``llm_batch`` failed; the others succeeded and are kept.

    ``results`` holds one entry per prompt (``None`` where the call failed) and ``errors`` maps the
    failed indices to their messages, so model code can keep the good half and retry the rest (the
    successful calls are cached, so a retried batch pays only for the failures).
    """

    def __init__(self, results: list[str | None], errors: dict[int, str]) -> None:
        self.results = results
        self.errors = errors
        shown = "; ".join(f"[{i}] {msg}" for i, msg in sorted(errors.items())[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} of {len(results)} calls failed: {shown}{more}")


class ReplayMissError(RLMError):
    """Replay asked for a model response the notebook does not record: reported, never invented."""


class BudgetExceeded(RLMError):
    """A run hit one of its budgets; ``reason`` is a one-line, user-facing explanation."""

    budget = "budget"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StepBudgetExceeded(BudgetExceeded):
    budget = "max_steps"


class DepthBudgetExceeded(BudgetExceeded):
    budget = "max_depth"


class SubcallBudgetExceeded(BudgetExceeded):
    budget = "max_subcalls"


class TokenBudgetExceeded(BudgetExceeded):
    budget = "max_tokens"


class CostBudgetExceeded(BudgetExceeded):
    budget = "max_cost"


class WallTimeExceeded(BudgetExceeded):
    budget = "max_wall_time"


class StepTimeout(BaseException):  # noqa: N818 - reads as what happened, like KeyboardInterrupt
    """One step's code ran past the per-step timeout; the run goes on with the error fed back.

    A BaseException (like KeyboardInterrupt) so that model code's ``except Exception`` cannot
    swallow it and keep an infinite loop alive.
    """


class RunStopped(RLMError):
    """The run was stopped by a human (interrupt, Stop button, ``%rlm stop``)."""

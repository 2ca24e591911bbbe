"""Model calls: an async OpenAI-compatible client on a background event loop, with limits,
rate limits, retries, a response cache and exact usage accounting."""

from .cache import ResponseCache, cache_key
from .client import Completion, LMClient, system_dropped, window_from_error
from .loop import BackgroundLoop
from .usage import UsageLedger

__all__ = ["LMClient", "Completion", "ResponseCache", "cache_key", "BackgroundLoop", "UsageLedger",
           "system_dropped", "window_from_error"]

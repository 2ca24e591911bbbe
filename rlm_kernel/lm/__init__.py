"""Model calls: an async OpenAI-compatible client on a background event loop, with limits,
rate limits, retries, a response cache and exact usage accounting."""

from .cache import ResponseCache, cache_key
from .client import Completion, LMClient
from .loop import BackgroundLoop
from .usage import UsageLedger

__all__ = ["LMClient", "Completion", "ResponseCache", "cache_key", "BackgroundLoop", "UsageLedger"]

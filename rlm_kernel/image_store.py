"""The images sub-calls sent, kept for this session by hash, within a byte budget.

Why: a notebook keeps an image sub-call's images only as thumbnails, hashes and sizes (the
originals would make a 20-page run tens of megabytes), so a re-run ``%%llm --call ID`` cell can
re-send the same images only while the kernel holds them. Like :class:`~.prompt_store.PromptStore`
it keeps the newest up to ``limit()`` bytes (``keep_image_bytes``) and forgets the oldest; an image
sent again counts as new. Keyed by sha256, so a page sent by many calls is held once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from .media import ImageData, fit, thumbnail

__all__ = ["ImageStore"]


class ImageStore:
    """sha256 -> :class:`ImageData`, newest kept first, at most ``limit()`` bytes in all.

    Thread-safe (sub-calls of a batch are recorded from the cell thread, read by ``%%llm``).
    ``limit`` is read at each access, so ``%rlm config keep_image_bytes=...`` applies at once. An
    image larger than the whole budget is not kept.
    """

    #: Thumbnails remembered (a few kilobytes each), so a page sent by many calls is shrunk once.
    THUMBNAILS = 4096

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._items: OrderedDict[str, ImageData] = OrderedDict()
        self._thumbs: OrderedDict[str, ImageData] = OrderedDict()
        self._fits: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    def fit(self, image: ImageData, max_edge: int) -> ImageData:
        """:func:`rlm_kernel.media.fit` of ``image``, kept: the sized-down copy is what is sent,
        and a page sent again (another call, a re-run step) is not sized down again while held."""
        key = (image.sha256, max_edge)
        with self._lock:
            sha = self._fits.get(key)
            held = self._items.get(sha) if sha is not None else None
        if held is not None:
            self.put(held)
            return held
        fitted = fit(image, max_edge)
        self.put(fitted)
        with self._lock:
            self._fits[key] = fitted.sha256
            while len(self._fits) > self.THUMBNAILS:
                self._fits.popitem(last=False)
        return fitted

    def thumbnail(self, image: ImageData) -> ImageData:
        """:func:`rlm_kernel.media.thumbnail` of ``image``, made once per image."""
        with self._lock:
            thumb = self._thumbs.get(image.sha256)
            if thumb is not None:
                self._thumbs.move_to_end(image.sha256)
                return thumb
        thumb = thumbnail(image)
        with self._lock:
            self._thumbs[image.sha256] = thumb
            while len(self._thumbs) > self.THUMBNAILS:
                self._thumbs.popitem(last=False)
        return thumb

    def put(self, image: ImageData) -> None:
        with self._lock:
            old = self._items.pop(image.sha256, None)
            if old is not None:
                self.bytes -= len(old.data)
            if len(image.data) <= self._budget():
                self._items[image.sha256] = image
                self.bytes += len(image.data)
            self._trim()

    def get(self, sha256: str) -> ImageData | None:
        with self._lock:
            self._trim()
            return self._items.get(sha256)

    def __contains__(self, sha256: object) -> bool:
        with self._lock:
            self._trim()
            return sha256 in self._items

    def __len__(self) -> int:
        with self._lock:
            self._trim()
            return len(self._items)

    def _budget(self) -> int:
        return max(0, int(self._limit()))

    def _trim(self) -> None:
        limit = self._budget()
        while self.bytes > limit:
            _, old = self._items.popitem(last=False)
            self.bytes -= len(old.data)

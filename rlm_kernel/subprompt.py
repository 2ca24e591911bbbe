"""A sub-call's prompt: its text and its images, from whatever form model code passed them in.

``llm(prompt, images=[...])`` takes images beside the text; in ``llm_batch`` each prompt carries its
own, as a ``(text, images)`` pair or a ``{"prompt": text, "images": [...]}`` dict (a plain string
is a prompt without images, as always). Why both forms: a pair is what a list comprehension writes
most naturally (``[(q, [p["image"]]) for p in context]``), a dict says what each part is. This
module turns any of them into a :class:`SubPrompt` (text + sized-down images), and a SubPrompt into
the message that is sent, the message its cache key is computed from (images by hash), and what
the notebook records (sizes, hashes, thumbnails).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from .image_store import ImageStore
from .media import ImageData, key_message, load_images, user_message

__all__ = ["SubPrompt", "as_subprompt"]


@dataclass
class SubPrompt:
    text: str
    images: list[ImageData] = field(default_factory=list)

    def message(self, detail: str = "") -> dict[str, Any]:
        """The user message sent: plain text, or a text part and one ``image_url`` per image."""
        return user_message(self.text, self.images, detail or None)

    def key_message(self, detail: str = "") -> dict[str, Any]:
        """The same message as its cache key sees it: images by sha256, never their bytes."""
        return key_message(self.text, self.images, detail or None)

    def records(self, store: ImageStore) -> list[dict[str, Any]]:
        """What the notebook keeps of each image: size, type, hash, and a small thumbnail."""
        out = []
        for image in self.images:
            thumb = store.thumbnail(image)
            out.append({**image.info.to_dict(), "thumb_mime": thumb.mime,
                        "thumb": base64.b64encode(thumb.data).decode("ascii")})
        return out


def _text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, bytes):
        return prompt.decode("utf-8", "replace")
    return str(prompt)


def _split(item: Any) -> tuple[Any, Any]:
    """``(text, images)`` of a pair or a dict; ``(item, None)`` for anything else."""
    if isinstance(item, tuple) and len(item) == 2 and not isinstance(item[1], str):
        return item
    if isinstance(item, dict) and "prompt" in item:
        unknown = sorted(set(item) - {"prompt", "images"})
        if unknown:
            raise TypeError(f"a prompt dict takes the keys 'prompt' and 'images', not {unknown}")
        return item["prompt"], item.get("images")
    return item, None


def as_subprompt(item: Any, images: Any = None, *, store: ImageStore, max_edge: int,
                 where: str = "the prompt") -> SubPrompt:
    """Read one prompt (a string, a ``(text, images)`` pair or a ``{"prompt", "images"}`` dict,
    plus ``images`` given beside it) into text and images sized down to ``max_edge`` pixels.

    Errors say which prompt (``where``) and what an image may be, so the model can fix its code.
    """
    text, own = _split(item)
    if own is not None and images is not None:
        raise TypeError(f"{where} carries images already; pass them once (in the prompt or as "
                        "images=..., not both)")
    raw = own if own is not None else images
    try:
        loaded = load_images(raw)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    return SubPrompt(_text(text), [store.fit(im, max_edge) for im in loaded])

"""Image parts of chat-completions requests, as the scripted model checks and reads them.

Why a module of its own: a vision request must be refused exactly where a real OpenAI endpoint
refuses it (an image in a system message, a URL that is not an image, a bad ``detail``), or
tests that pass here would fail against a provider. Everything is checked before any policy runs,
and every refusal is an OpenAI-shaped 400 with a message that says what was wrong.

What is accepted (OpenAI's chat-completions shape): in a *user* message whose ``content`` is a
list, parts ``{"type": "image_url", "image_url": {"url": URL, "detail": "auto"|"low"|"high"}}``
(``detail`` optional) where URL is ``data:image/{png,jpeg,gif,webp};base64,<data>`` and the data
decodes to an image of that type. The scripted model fetches nothing, so http(s) URLs are refused
with a message that says so. Pillow is needed only when a request carries an image.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..media import INSTALL_HINT, decode_data_url, image_tokens

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["WireImage", "ImagePartError", "split_images", "ACCEPTED_MIMES", "DETAILS"]

ACCEPTED_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")
DETAILS = ("auto", "low", "high")
_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF",
                "image/webp": "WEBP"}


class ImagePartError(Exception):
    """An image part a real endpoint would refuse; the wire layer turns it into its error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = "invalid_image_url", type: str = "invalid_request_error"
                 ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status, message, param, code, type)


@dataclass(frozen=True)
class WireImage:
    """One image a request carried: where, what, and its decoded pixels for the policies."""

    message: int  # index of the message that held it
    mime: str
    width: int
    height: int
    sha256: str
    detail: str | None
    data: bytes = field(repr=False)

    @property
    def tokens(self) -> int:
        return image_tokens(self.width, self.height, self.detail)

    def pil(self) -> PILImage.Image:
        from PIL import Image

        img = Image.open(io.BytesIO(self.data))
        img.load()
        return img


def _bad(message: str, param: str, code: str = "invalid_image_url") -> ImagePartError:
    return ImagePartError(400, message, param=param, code=code)


def _read_part(part: dict[str, Any], i: int, j: int, role: str) -> WireImage:
    param = f"messages[{i}].content[{j}]"
    if role != "user":
        raise _bad(f"Image URLs are only allowed for messages with role 'user', but this message "
                   f"with role '{role}' contains an image URL.", f"{param}.type",
                   "invalid_image_role")
    ref = part.get("image_url")
    if not isinstance(ref, dict) or not isinstance(ref.get("url"), str):
        raise _bad(f"{param}.image_url must be an object with a string 'url' "
                   "(e.g. {\"url\": \"data:image/png;base64,...\"}).", f"{param}.image_url")
    extra = sorted(set(ref) - {"url", "detail"})
    if extra:
        raise _bad(f"{param}.image_url has unknown fields {extra}; it takes 'url' and 'detail'.",
                   f"{param}.image_url")
    detail = ref.get("detail")
    if detail is not None and detail not in DETAILS:
        raise _bad(f"{param}.image_url.detail must be one of {list(DETAILS)}, not {detail!r}.",
                   f"{param}.image_url.detail")
    url = ref["url"]
    if not url.startswith("data:"):
        raise _bad("The rlm-kernel scripted demonstration model (not an LLM) fetches nothing: "
                   "send images as data URLs (data:image/png;base64,...).", f"{param}.image_url.url")
    try:
        mime, raw = decode_data_url(url)
    except ValueError as exc:
        raise _bad(f"{param}.image_url.url: {exc}.", f"{param}.image_url.url") from None
    if mime not in ACCEPTED_MIMES:
        raise _bad(f"You uploaded an unsupported image type {mime!r}. Please make sure your image "
                   f"is one of {list(ACCEPTED_MIMES)}.", f"{param}.image_url.url",
                   "invalid_image_format")
    try:
        from PIL import Image
    except ImportError:
        raise ImagePartError(500, f"the scripted model needs Pillow to read images: {INSTALL_HINT}",
                             type="server_error", code="scripted_needs_pillow") from None
    try:
        img = Image.open(io.BytesIO(raw))
        img.load()
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the client's bad image
        raise _bad(f"{param}: the data URL does not hold a valid image ({exc}).",
                   f"{param}.image_url.url", "invalid_image") from None
    if img.format != _PIL_FORMATS[mime]:
        raise _bad(f"{param}: the data URL says {mime} but holds {img.format or 'unknown'} data.",
                   f"{param}.image_url.url", "invalid_image_format")
    return WireImage(i, mime, img.width, img.height, hashlib.sha256(raw).hexdigest(), detail, raw)


def split_images(messages: Any) -> tuple[Any, list[WireImage]]:
    """``(messages without their image parts, the images)``, checking every image part.

    Messages without images come back unchanged (the same list), so a text-only request costs one
    scan. Text parts are kept in place; a message that held only images keeps an empty text part.
    Raises :class:`ImagePartError` (400) for any image part a real endpoint would refuse.
    """
    if not isinstance(messages, list) or not any(
            isinstance(m, dict) and isinstance(m.get("content"), list)
            and any(isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
            for m in messages):
        return messages, []
    images: list[WireImage] = []
    out = []
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            out.append(msg)
            continue
        kept = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image_url":
                images.append(_read_part(part, i, j, str(msg.get("role"))))
            else:
                kept.append(part)
        out.append({**msg, "content": kept or [{"type": "text", "text": ""}]})
    return out, images

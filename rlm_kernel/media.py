"""Images in contexts and sub-calls: one record for an image, whatever form it came in.

Why one notion: an image reaches a run as a PIL image, as bytes read from a file, as a path, or as
a page rendered from a PDF; it leaves as an ``image_url`` part of an OpenAI-style message, as a
cache-key entry, as a thumbnail in a notebook and as a line in what the root model is told about
the context. :class:`ImageData` (encoded bytes + sha256 + size + MIME type) is that one form, and
:class:`ImageInfo` its notebook-safe description (no pixels). Everything else here converts to or
from them.

Rules kept throughout:

- An image is identified by the sha256 of its encoded bytes (what is sent), never by its pixels'
  Python identity, so cache keys and records are stable across runs of the same Pillow version.
- Cache keys and records hold hashes and dimensions, never the bytes (:func:`key_messages`).
- Pillow is imported only when an image is actually handled: text-only sessions never pay for it,
  and a missing Pillow is reported with the extra to install (:func:`require_pillow`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "ImageData", "ImageInfo", "ImageSpot", "ImageSummary",
    "THUMBNAIL_EDGE", "MIME_BY_FORMAT", "INSTALL_HINT",
    "require_pillow", "is_image", "sniff_mime", "load_image", "load_images", "fit", "thumbnail",
    "data_url", "decode_data_url", "image_part", "user_message", "key_message", "key_messages",
    "message_images", "find_images", "describe_images", "images_in", "image_tokens",
    "estimate_tokens",
]

#: Longest side of a notebook thumbnail: a strip of them stays a few kilobytes per image.
THUMBNAIL_EDGE = 128
#: Formats OpenAI-compatible vision endpoints accept as they are; anything else is sent as PNG.
MIME_BY_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif",
                  "WEBP": "image/webp"}
_FORMAT_BY_MIME = {v: k for k, v in MIME_BY_FORMAT.items()}
INSTALL_HINT = "pip install 'rlm-kernel[images]'"
_JPEG_QUALITY = 90
_THUMB_JPEG_QUALITY = 70
#: Magic numbers of encoded images: how bytes in a context are recognised without Pillow.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
               (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"BM", "image/bmp"),
               (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"))


def require_pillow() -> Any:
    """``PIL.Image``, or an ImportError that says which extra to install."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"images need Pillow, which is not installed: {INSTALL_HINT}") from exc
    return Image


# --------------------------------------------------------------------------------------------------
# The records


@dataclass(frozen=True)
class ImageInfo:
    """What a notebook, a record or the root model may know about an image: never its pixels."""

    sha256: str
    mime: str
    width: int
    height: int
    bytes: int

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageInfo:
        return cls(sha256=str(data["sha256"]), mime=str(data["mime"]), width=int(data["width"]),
                   height=int(data["height"]), bytes=int(data.get("bytes", 0)))


@dataclass(frozen=True, eq=False, repr=False)
class ImageData:
    """An encoded image (PNG, JPEG, GIF or WebP bytes) with its hash and size.

    Immutable and compared by hash, so it can sit in a context, be sent many times, and key a cache.
    Its ``repr`` is deterministic (no memory address), which matters: step outputs that print an
    image are fed back to the root model, and replay needs those outputs byte-identical.
    In a notebook it displays as a bounded thumbnail, never as the full image.
    """

    data: bytes
    mime: str
    width: int
    height: int
    sha256: str = field(default="")

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())

    @property
    def info(self) -> ImageInfo:
        return ImageInfo(self.sha256, self.mime, self.width, self.height, len(self.data))

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, as PIL images have it (code written for either works on both)."""
        return self.width, self.height

    @property
    def format(self) -> str:
        return _FORMAT_BY_MIME.get(self.mime, self.mime.split("/")[-1].upper())

    def to_pil(self) -> PILImage.Image:
        """The decoded image (a new PIL image each call: crop, rotate, enhance as you like)."""
        image_mod = require_pillow()
        img = image_mod.open(io.BytesIO(self.data))
        img.load()
        return img

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageData) and other.sha256 == self.sha256

    def __hash__(self) -> int:
        return hash(self.sha256)

    def __repr__(self) -> str:
        return f"<image {self.width}x{self.height} {self.format} sha256:{self.sha256[:12]}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        thumb = thumbnail(self)
        return {"text/plain": repr(self),
                thumb.mime: base64.b64encode(thumb.data).decode("ascii")}


# --------------------------------------------------------------------------------------------------
# Normalising


def sniff_mime(data: bytes | bytearray | memoryview) -> str | None:
    """The MIME type of encoded image bytes from their magic number, or None (no Pillow needed)."""
    head = bytes(data[:16])
    for sig, mime in _SIGNATURES:
        if head.startswith(sig):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def is_image(obj: Any) -> bool:
    """Whether ``obj`` is something this module treats as an image *inside a context*.

    An :class:`ImageData`, a PIL image (checked only if PIL is already imported: asking must not
    import it) or bytes that start like an encoded image. Strings are text, never paths, here.
    """
    if isinstance(obj, ImageData):
        return True
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return sniff_mime(obj) is not None
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(obj, pil.Image)


def _encode(img: PILImage.Image, fmt: str) -> bytes:
    """Encode deterministically: same pixels and Pillow version give the same bytes (and hash)."""
    out = io.BytesIO()
    if fmt == "JPEG":
        if img.mode not in ("RGB", "L", "CMYK"):
            img = _flatten(img)
        img.save(out, format="JPEG", quality=_JPEG_QUALITY, optimize=True)
    else:
        if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        img.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def _flatten(img: PILImage.Image) -> PILImage.Image:
    """RGB or L, with any transparency composited onto white (as a page would show it)."""
    image_mod = require_pillow()
    if img.mode in ("RGB", "L"):
        return img
    if img.mode == "P":
        img = img.convert("RGBA")
    if "A" in img.getbands():
        rgba = img.convert("RGBA")
        base = image_mod.new("RGB", rgba.size, (255, 255, 255))
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    return img.convert("RGB")


def _from_pil(img: PILImage.Image, fmt: str = "PNG") -> ImageData:
    data = _encode(img, fmt)
    return ImageData(data, MIME_BY_FORMAT[fmt], img.width, img.height)


def _from_bytes(raw: bytes) -> ImageData:
    image_mod = require_pillow()
    try:
        img = image_mod.open(io.BytesIO(raw))
    except Exception as exc:  # noqa: BLE001 - Pillow raises several kinds for unreadable data
        raise ValueError(f"these {len(raw):,} bytes are not an image Pillow can read ({exc})") \
            from None
    mime = MIME_BY_FORMAT.get(img.format or "")
    if mime is not None and not getattr(img, "is_animated", False):
        return ImageData(raw, mime, img.width, img.height)
    img.load()  # BMP, TIFF, an animated GIF...: sent as a PNG of its (first) frame
    return _from_pil(img)


def decode_data_url(url: str) -> tuple[str, bytes]:
    """``(mime, bytes)`` of a ``data:image/...;base64,...`` URL; ValueError if it is not one."""
    head, sep, payload = url.partition(",")
    if not (sep and head.startswith("data:") and head.endswith(";base64")):
        raise ValueError("not a base64 data URL (expected data:image/<type>;base64,<data>)")
    mime = head[5:-7]
    try:
        return mime, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the data URL's base64 payload is invalid ({exc})") from None


def load_image(obj: Any) -> ImageData:
    """Normalise one image: :class:`ImageData`, PIL image, encoded bytes, a path, a data URL, or an
    array (anything with ``__array_interface__``, e.g. numpy, via ``PIL.Image.fromarray``).

    PNG, JPEG, GIF and WebP bytes are kept as they are (their hash is the file's); PIL images and
    other formats are encoded as PNG.
    """
    if isinstance(obj, ImageData):
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(obj))
    if isinstance(obj, str) and obj.startswith("data:"):
        return _from_bytes(decode_data_url(obj)[1])
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no image file {path!r} (from {os.getcwd()})")
        with open(path, "rb") as f:
            raw = f.read()
        try:
            return _from_bytes(raw)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    image_mod = require_pillow()
    if isinstance(obj, image_mod.Image):
        return _from_pil(obj)
    if hasattr(obj, "__array_interface__"):
        return _from_pil(image_mod.fromarray(obj))
    raise TypeError(
        f"an image must be a PIL image, image bytes (PNG, JPEG, ...), a file path or a data URL; "
        f"got {type(obj).__name__}")


def load_images(images: Any) -> list[ImageData]:
    """A list of images from one image or an iterable of them (None: no images)."""
    if images is None:
        return []
    if isinstance(images, dict):
        keys = ", ".join(repr(k) for k in list(images)[:5])
        raise TypeError(f"images takes an image or a list of images, not a dict (keys {keys}); "
                        "pass the image itself, e.g. item['image']")
    if isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike, ImageData)) \
            or is_image(images) or hasattr(images, "__array_interface__"):
        return [load_image(images)]
    if not isinstance(images, Iterable):
        return [load_image(images)]
    return [load_image(x) for x in images]


def fit(image: ImageData, max_edge: int) -> ImageData:
    """The image with its longest side at most ``max_edge`` pixels (aspect kept; 0: unchanged).
    ``max_edge`` is the ``image_max_edge`` setting where a run sends images (1024 by default:
    a document page's text stays legible at ~87 dpi on A4, and twenty pages are a few megabytes
    of request, not tens).

    Returned unchanged (same bytes, same hash) when it already fits, so fitting twice is free and
    a context's images keep their identity. JPEGs stay JPEG; other formats become PNG.
    """
    if max_edge <= 0 or max(image.width, image.height) <= max_edge:
        return image
    image_mod = require_pillow()
    img = image.to_pil()
    if img.mode == "P":
        img = img.convert("RGBA")
    img.thumbnail((max_edge, max_edge), image_mod.Resampling.LANCZOS)
    return _from_pil(img, "JPEG" if image.mime == "image/jpeg" else "PNG")


def thumbnail(image: ImageData, edge: int = THUMBNAIL_EDGE) -> ImageData:
    """A small preview for notebooks: at most ``edge`` pixels a side, JPEG or PNG, whichever is
    smaller (a 128-pixel thumbnail is a few kilobytes; a page of text is usually smaller as PNG)."""
    image_mod = require_pillow()
    img = _flatten(image.to_pil())
    img.thumbnail((edge, edge), image_mod.Resampling.LANCZOS)
    png = _encode(img, "PNG")
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=_THUMB_JPEG_QUALITY, optimize=True)
    jpeg = out.getvalue()
    if len(jpeg) < len(png):
        return ImageData(jpeg, "image/jpeg", img.width, img.height)
    return ImageData(png, "image/png", img.width, img.height)


# --------------------------------------------------------------------------------------------------
# Messages and cache keys


def data_url(image: ImageData) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"


def image_part(image: ImageData, detail: str | None = None) -> dict[str, Any]:
    """An OpenAI chat-completions ``image_url`` content part carrying the image as a data URL."""
    url: dict[str, Any] = {"url": data_url(image)}
    if detail:
        url["detail"] = detail
    return {"type": "image_url", "image_url": url}


def user_message(text: str, images: Sequence[ImageData] = (), detail: str | None = None
                 ) -> dict[str, Any]:
    """A user message: plain text content without images (byte-identical to a text-only call, so
    existing cache keys hold), else a text part followed by one ``image_url`` part per image."""
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text},
                                        *(image_part(im, detail) for im in images)]}


def _key_part(sha256: str, detail: str | None) -> dict[str, Any]:
    ref: dict[str, Any] = {"sha256": sha256}
    if detail:
        ref["detail"] = detail
    return {"type": "image_url", "image_url": ref}


def key_message(text: str, images: Sequence[ImageData] = (), detail: str | None = None
                ) -> dict[str, Any]:
    """What :func:`user_message` contributes to a cache key: images by hash, never their bytes.

    Equal to ``key_messages([user_message(text, images, detail)])[0]``, without encoding or
    decoding any base64.
    """
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text},
                                        *(_key_part(im.sha256, detail) for im in images)]}


def key_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as a cache key sees them: every data-URL image replaced by the sha256 of its
    bytes (other URLs are kept: they name their image). Messages without images are returned as
    they are (the same objects), so text-only keys are unchanged and cost nothing extra."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        content = msg.get("content")
        if not isinstance(content, list) or not any(_is_data_image(p) for p in content):
            out.append(msg)
            continue
        parts = []
        for part in content:
            if _is_data_image(part):
                _, raw = decode_data_url(part["image_url"]["url"])
                parts.append(_key_part(hashlib.sha256(raw).hexdigest(),
                                       part["image_url"].get("detail")))
            else:
                parts.append(part)
        out.append({**msg, "content": parts})
    return out


def _is_data_image(part: Any) -> bool:
    return (isinstance(part, dict) and part.get("type") == "image_url"
            and isinstance(part.get("image_url"), dict)
            and str(part["image_url"].get("url", "")).startswith("data:"))


def message_images(messages: Sequence[dict[str, Any]]) -> list[ImageData]:
    """The data-URL images of ``messages``, in order (for thumbnails of what was sent)."""
    found = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            found += [_from_bytes(decode_data_url(p["image_url"]["url"])[1])
                      for p in content if _is_data_image(p)]
    return found


def image_tokens(width: int, height: int, detail: str | None = None) -> int:
    """Prompt tokens of one image by OpenAI's published rule for GPT-4o-class models: 85 at low
    detail; else fit in 2048x2048, shorten to 768 px on the short side, and 170 per 512-px tile
    plus 85. Other providers count differently; this is the estimate rate limits and the scripted
    model use, so they agree with each other."""
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    scale = min(1.0, 2048 / max(w, h, 1))
    w, h = w * scale, h * scale
    scale = min(1.0, 768 / max(min(w, h), 1))
    w, h = w * scale, h * scale
    tiles = -(-int(w) // 512) * -(-int(h) // 512)
    return 85 + 170 * max(1, tiles)


#: What :func:`estimate_tokens` counts for an image whose size it does not read: a 1024x1024
#: image at high detail by :func:`image_tokens`.
_IMAGE_TOKENS_GUESS = 765


def estimate_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """Prompt tokens of ``messages`` for rate limits: text at four characters a token, each image
    part at :data:`_IMAGE_TOKENS_GUESS` (85 at low detail). Never counts base64 as text."""
    chars = images = low = 0
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    ref = part.get("image_url")
                    if isinstance(ref, dict) and ref.get("detail") == "low":
                        low += 1
                    else:
                        images += 1
                elif isinstance(part, dict):
                    chars += len(str(part.get("text", "")))
        else:
            chars += len(str(content or ""))
    return chars // 4 + images * _IMAGE_TOKENS_GUESS + low * 85


# --------------------------------------------------------------------------------------------------
# Describing a context that holds images


@dataclass(frozen=True)
class ImageSpot:
    """One image found in a context: where (a path of keys and indices) and how big."""

    path: tuple[Any, ...]
    width: int
    height: int
    format: str

    def where(self, name: str = "context") -> str:
        return name + "".join(f"[{k!r}]" for k in self.path)


@dataclass
class ImageSummary:
    """The images of a context: how many, where and how big. ``complete`` is False when the scan
    stopped at its node limit (a huge context: the count is then a lower bound)."""

    spots: list[ImageSpot] = field(default_factory=list)
    complete: bool = True
    texts: int = 0
    text_chars: int = 0

    @property
    def count(self) -> int:
        return len(self.spots)

    def lines(self, name: str = "context", max_lines: int = 12) -> list[str]:
        """Runs of same-sized images whose positions differ by one consecutive index become one
        line (``context[i]['image'] for i in range(0, 20): 20 images, 1241x1754 PNG``)."""
        out: list[str] = []
        groups = _runs(self.spots)
        for group in groups:
            first = group[0]
            what = f"{first.width}x{first.height} {first.format}"
            if len(group) == 1:
                out.append(f"{first.where(name)}: an image, {what}")
                continue
            axis = _varying_axis(group[0].path, group[1].path)
            lo, hi = group[0].path[axis], group[-1].path[axis]
            pattern = list(first.path)
            pattern[axis] = _Var("i")
            where = name + "".join(f"[{k!r}]" for k in pattern)
            out.append(f"{where} for i in range({lo}, {hi + 1}): {len(group)} images, {what}")
        if len(out) > max_lines:
            rest = sum(len(g) for g in groups[max_lines - 1:])
            out = out[: max_lines - 1] + [f"... and {rest} more images elsewhere"]
        return out

    def text(self, name: str = "context", max_lines: int = 12) -> str:
        """The paragraph the root model is told (empty when there are no images)."""
        if not self.spots:
            return ""
        more = "" if self.complete else " (at least: the scan stopped early)"
        head = f"{name} holds {self.count} image{'s' * (self.count != 1)}{more}"
        if self.texts:
            head += (f" alongside {self.texts} text item{'s' * (self.texts != 1)} "
                     f"({self.text_chars:,} characters)")
        head += ". Pass images to llm(prompt, images=[...]); the model never sees them otherwise:"
        return "\n".join([head, *("- " + line for line in self.lines(name, max_lines))])


class _Var:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _varying_axis(a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)


def _runs(spots: list[ImageSpot]) -> list[list[ImageSpot]]:
    groups: list[list[ImageSpot]] = []
    for spot in spots:
        if groups and _continues(groups[-1], spot):
            groups[-1].append(spot)
        else:
            groups.append([spot])
    return groups


def _continues(group: list[ImageSpot], spot: ImageSpot) -> bool:
    last = group[-1]
    if (spot.width, spot.height, spot.format) != (last.width, last.height, last.format) \
            or len(spot.path) != len(last.path):
        return False
    diffs = [i for i, (x, y) in enumerate(zip(last.path, spot.path, strict=True)) if x != y]
    if len(diffs) != 1:
        return False
    axis = diffs[0]
    if not (isinstance(last.path[axis], int) and isinstance(spot.path[axis], int)
            and spot.path[axis] == last.path[axis] + 1):
        return False
    return len(group) < 2 or _varying_axis(group[0].path, group[1].path) == axis


def _spot(obj: Any, path: tuple[Any, ...]) -> ImageSpot | None:
    if isinstance(obj, ImageData):
        return ImageSpot(path, obj.width, obj.height, obj.format)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        mime = sniff_mime(obj)
        if mime is None:
            return None
        try:
            img = require_pillow().open(io.BytesIO(bytes(obj)))  # reads the header only
        except ImportError:  # no Pillow: still an image, of a size unknown here
            return ImageSpot(path, 0, 0, mime.split("/")[-1].upper())
        except Exception:  # noqa: BLE001 - bytes that only look like an image: not one
            return None
        return ImageSpot(path, img.width, img.height, img.format or mime.split("/")[-1].upper())
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(obj, pil.Image):
        return ImageSpot(path, obj.width, obj.height, obj.format or obj.mode)
    return None


def find_images(context: Any, *, max_depth: int = 6, max_nodes: int = 1_000_000) -> ImageSummary:
    """Every image in ``context`` (alone, or inside lists, tuples and dicts), in order, with the
    strings beside them counted. Pixels are never read: sizes come from records or headers.

    Bounded: at most ``max_nodes`` values are looked at and containers deeper than ``max_depth``
    are not opened, so describing a context of ten million strings stays a linear scan.
    """
    summary = ImageSummary()
    budget = [max_nodes]

    def walk(obj: Any, path: tuple[Any, ...], depth: int) -> None:
        if budget[0] <= 0:
            summary.complete = False
            return
        budget[0] -= 1
        if isinstance(obj, str):
            summary.texts += 1
            summary.text_chars += len(obj)
            return
        spot = _spot(obj, path)
        if spot is not None:
            summary.spots.append(spot)
            return
        if depth >= max_depth:
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, (*path, k), depth + 1)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, (*path, i), depth + 1)

    walk(context, (), 0)
    if not summary.spots:  # a plain text context: its strings are not "text alongside images"
        summary.texts = summary.text_chars = 0
    return summary


def images_in(context: Any, *, max_depth: int = 6) -> list[Any]:
    """The images of ``context`` themselves (as :func:`find_images` finds them), in order: what a
    sub-call is sent when ``rlm()`` at the depth limit becomes one ``llm()`` call."""
    out: list[Any] = []

    def walk(obj: Any, depth: int) -> None:
        if isinstance(obj, str):
            return
        if _spot(obj, ()) is not None:
            out.append(obj)
        elif depth < max_depth and isinstance(obj, dict):
            for v in obj.values():
                walk(v, depth + 1)
        elif depth < max_depth and isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, depth + 1)

    walk(context, 0)
    return out


def describe_images(context: Any, name: str = "context", max_lines: int = 12) -> str:
    """What the root model is told about a context's images ("" when it holds none)."""
    return find_images(context).text(name, max_lines)

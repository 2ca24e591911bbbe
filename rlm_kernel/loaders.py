"""Files into contexts: a PDF as page images plus page text, a folder of images, a text file.

Why pypdfium2 for PDFs: a sub-model can only look at a page it is sent as an image, so pages must
be *rendered*, and pypdf cannot render (it parses, and extracts text or embedded images, but a page
of vector text or drawings has no image to extract). pypdfium2 binds PDFium, Chrome's PDF engine:
it renders any page and extracts its text, ships as a self-contained wheel (no poppler, no
ghostscript, no system packages) and is Apache-2.0/BSD-3 licensed. Pillow holds the pixels.
Both are the optional extra ``rlm-kernel[images]``; they are imported only when a PDF or an image
is loaded.

A loaded PDF is a list with one dict per page, ``{"page": 1, "text": "...", "image": ImageData}``;
an image folder is a list of ``{"name": "scan-01.png", "image": ImageData}``. Both are plain
Python the root model can index, filter and slice, and whose images it can pass to ``llm``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from .media import INSTALL_HINT, ImageData, find_images, load_image, require_pillow

__all__ = ["Loaded", "load_pdf", "load_image_folder", "load_path", "load_source", "DEFAULT_DPI",
           "IMAGE_SUFFIXES"]

#: Rendering resolution of PDF pages: 150 dpi makes an A4 page 1241x1754 pixels, enough for
#: small print; pages are sized down to ``image_max_edge`` only when sent.
DEFAULT_DPI = 150
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class Loaded:
    """What :func:`load_path` made: the context, its kind, and one line that says so."""

    context: Any
    kind: str  # "text" | "pdf" | "images" | "image"
    source: str  # absolute path (and "#dpi=N" if not the default), recorded for replay: load_source
    note: str = ""  # e.g. files a folder held that are not images

    def summary(self) -> str:
        found = find_images(self.context)
        if self.kind == "pdf":
            chars = sum(len(p["text"]) for p in self.context)
            size = f", {found.spots[0].width}x{found.spots[0].height} px" if found.spots else ""
            text = f"{len(self.context)} pages as images{size}, {chars:,} characters of text"
        elif self.kind == "images":
            text = f"{found.count} images"
        elif self.kind == "image":
            text = f"one image, {self.context.width}x{self.context.height} {self.context.format}"
        else:
            text = f"{len(self.context):,} characters of text"
        return text + (f" ({self.note})" if self.note else "")


def _pdfium() -> Any:
    try:
        import pypdfium2
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"loading a PDF needs pypdfium2, which is not installed: {INSTALL_HINT}"
                          ) from exc
    return pypdfium2


def load_pdf(path: str | os.PathLike[str], *, dpi: int = DEFAULT_DPI, max_pages: int = 0,
             password: str | None = None) -> list[dict[str, Any]]:
    """Every page of a PDF (the first ``max_pages`` when > 0) as ``{"page", "text", "image"}``.

    The image is the page rendered at ``dpi`` as PNG; the text is what the PDF's text layer holds
    (empty for a scan without OCR, which is exactly when a sub-model must read the image).
    """
    pdfium = _pdfium()
    require_pillow()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no PDF file {path!r} (from {os.getcwd()})")
    try:
        doc = pdfium.PdfDocument(path, password=password)
    except pdfium.PdfiumError as exc:
        raise ValueError(f"{path}: not a PDF pypdfium2 can open ({exc}); if it is encrypted, "
                         "pass its password") from None
    pages: list[dict[str, Any]] = []
    try:
        count = len(doc) if max_pages <= 0 else min(len(doc), max_pages)
        for i in range(count):
            page = doc[i]
            try:
                textpage = page.get_textpage()
                try:
                    text = textpage.get_text_bounded()
                finally:
                    textpage.close()
                bitmap = page.render(scale=dpi / 72)
                image = load_image(bitmap.to_pil())
                bitmap.close()
            finally:
                page.close()
            pages.append({"page": i + 1, "text": text.replace("\r\n", "\n"), "image": image})
    finally:
        doc.close()
    return pages


def _natural_key(name: str) -> list[Any]:
    """``page2`` before ``page10``: numbers in names compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def load_image_folder(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The images of a folder (not its subfolders), in natural name order, as
    ``{"name", "image"}``; and the names of the files that were skipped (not images)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no folder {path!r} (from {os.getcwd()})")
    items: list[dict[str, Any]] = []
    skipped: list[str] = []
    for name in sorted(os.listdir(path), key=_natural_key):
        full = os.path.join(path, name)
        if not os.path.isfile(full) or name.startswith("."):
            continue
        if not name.lower().endswith(IMAGE_SUFFIXES):
            skipped.append(name)
            continue
        items.append({"name": name, "image": load_image(full)})
    return items, skipped


def load_path(path: str | os.PathLike[str], *, dpi: int = DEFAULT_DPI) -> Loaded:
    """Load what ``path`` is: a folder of images, a PDF, an image, or (anything else) UTF-8 text."""
    path = os.fspath(path)
    source = os.path.abspath(path)
    if os.path.isdir(path):
        items, skipped = load_image_folder(path)
        if not items:
            raise ValueError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        note = f"skipped {len(skipped)} files that are not images" if skipped else ""
        return Loaded(items, "images", source, note)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no file {path!r} (from {os.getcwd()})")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"%PDF-") or path.lower().endswith(".pdf"):
        suffix = f"#dpi={dpi}" if dpi != DEFAULT_DPI else ""
        return Loaded(load_pdf(path, dpi=dpi), "pdf", source + suffix)
    if path.lower().endswith(IMAGE_SUFFIXES):
        image: ImageData = load_image(path)
        return Loaded(image, "image", source)
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return Loaded(f.read(), "text", source)


def load_source(source: str) -> Loaded:
    """Load again what a recorded ``source`` (:attr:`Loaded.source`) names: replay's way back to
    the same context (a PDF at the same resolution gives the same page images and hashes)."""
    path, _, option = source.partition("#dpi=")
    return load_path(path, dpi=int(option) if option.isdigit() else DEFAULT_DPI)

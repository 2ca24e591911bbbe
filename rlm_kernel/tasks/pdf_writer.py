"""A minimal PDF writer: pages with one full-page image and a few lines of real text.

Why: the image tasks need PDFs whose pages carry both a picture (which a sub-model must be sent) and
a text layer (which ``%rlm load`` extracts), generated offline at test time. Pillow writes
image-only PDFs; reportlab would be a dependency for one fixture. PDF 1.4 with an 8-bit grey or
RGB image (Flate-compressed) and Helvetica text is a page of code.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["write_pdf"]

_A4 = (595, 842)


def _text_literal(line: str) -> bytes:
    raw = line.encode("cp1252", "replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def write_pdf(path: str | os.PathLike[str],
              pages: Sequence[tuple[PILImage.Image | None, Sequence[str]]],
              page_size: tuple[int, int] = _A4, font_size: int = 11) -> None:
    """Write ``pages``, each an image drawn over the whole page (or None) and lines of text set
    in Helvetica from the top-left corner, to ``path``."""
    width, height = page_size
    objects: list[bytes] = []  # object k+1 is objects[k]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(head: bytes, data: bytes) -> bytes:
        return head[:-2] + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"

    catalog = add(b"")  # filled in once the page tree's number is known
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
               b"/Encoding /WinAnsiEncoding >>")
    page_ids: list[int] = []
    tree = len(objects) + 1 + 3 * len(pages)  # the page tree comes after every page
    for image, lines in pages:
        ops = []
        xobjects = b""
        if image is not None:
            img = image if image.mode in ("L", "RGB") else image.convert("RGB")
            space = b"/DeviceGray" if img.mode == "L" else b"/DeviceRGB"
            pix = add(stream(
                b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s "
                b"/BitsPerComponent 8 /Filter /FlateDecode >>" % (img.width, img.height, space),
                zlib.compress(img.tobytes(), 9)))
            xobjects = b" /XObject << /Im1 %d 0 R >>" % pix
            ops.append(b"q %d 0 0 %d 0 0 cm /Im1 Do Q" % (width, height))
        else:
            add(b"null")
        if lines:
            ops.append(b"BT /F1 %d Tf %d TL 36 %d Td" % (font_size, font_size + 3,
                                                         height - 24 - font_size))
            ops += [_text_literal(line) + b" Tj T*" for line in lines]
            ops.append(b"ET")
        content = add(stream(b"<< >>", b"\n".join(ops)))
        page_ids.append(add(
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 %d "
            b"0 R >>%s >> /Contents %d 0 R >>" % (tree, width, height, font, xobjects, content)))
    kids = b" ".join(b"%d 0 R" % p for p in page_ids)
    assert add(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))) == tree
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % tree

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for k, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % k + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, catalog, xref)
    with open(path, "wb") as f:
        f.write(out)

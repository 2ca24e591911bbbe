"""Number cards: page images that carry a number the scripted model can read back by a fixed rule.

Why: image sub-calls must be testable end to end offline, over the wire, with an answer that is
known. The scripted model is not an LLM and has no vision; instead the project *generates* images
in a documented pattern and the scripted model decodes that pattern from the pixels it is sent. A
real vision model reads the same number, printed in large digits on the card.

The rule (everything :func:`read_card` does):

1. Make the image grey (Pillow's ``L``) at whatever size it arrived (cards survive being sized down
   to about 100 pixels wide, and JPEG).
2. The code band is the rectangle from 8% to 92% of the width and 62% to 70% of the height,
   cut into 24 equal cells side by side.
3. A cell is black when the mean grey of its central half (in both directions) is below 128.
4. Cells 0 and 23 must be black, cells 1 and 22 white; cells 2 to 21 are 20 bits, most
   significant first, black = 1: the number (16 bits, 0..65535), then a 4-bit checksum, the sum of
   the number's four hexadecimal digits modulo 16. Anything else: the image holds no card.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..media import require_pillow
from .pdf_writer import write_pdf

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["make_card", "read_card", "write_number_pdf", "write_number_folder", "CARD_SIZE",
           "MAX_NUMBER"]

CARD_SIZE = (620, 877)  # A4 proportions; a PDF page of 595x842 pt, rendered at 150 dpi: 1241x1754
MAX_NUMBER = 0xFFFF
_CELLS = 24
_BAND_X = (0.08, 0.92)
_BAND_Y = (0.62, 0.70)


def _checksum(number: int) -> int:
    return sum((number >> s) & 0xF for s in (0, 4, 8, 12)) % 16


def _bits(number: int) -> list[int]:
    word = (number << 4) | _checksum(number)
    return [1, 0, *((word >> (19 - i)) & 1 for i in range(20)), 0, 1]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


def make_card(number: int, size: tuple[int, int] = CARD_SIZE, caption: str = "") -> PILImage.Image:
    """A white grey-scale card: ``caption`` small at the top, ``number`` in large digits, and the
    code band of the rule above."""
    if not 0 <= number <= MAX_NUMBER:
        raise ValueError(f"a card holds a number from 0 to {MAX_NUMBER}, not {number}")
    image_mod = require_pillow()
    from PIL import ImageDraw

    w, h = size
    img = image_mod.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    if caption:
        draw.text((w * 0.08, h * 0.08), caption, fill=0, font=_font(max(10, h // 40)))
    draw.text((w / 2, h * 0.40), str(number), fill=0, font=_font(max(12, h // 6)), anchor="mm")
    x0, x1 = w * _BAND_X[0], w * _BAND_X[1]
    y0, y1 = h * _BAND_Y[0], h * _BAND_Y[1]
    cell = (x1 - x0) / _CELLS
    for i, bit in enumerate(_bits(number)):
        if bit:
            draw.rectangle([round(x0 + i * cell), round(y0), round(x0 + (i + 1) * cell) - 1,
                            round(y1) - 1], fill=0)
    return img


def read_card(image: PILImage.Image) -> int | None:
    """The number of a card by the rule in this module's docstring, or None if there is none."""
    from PIL import ImageStat

    grey = image.convert("L") if image.mode != "L" else image
    w, h = grey.size
    x0, x1 = w * _BAND_X[0], w * _BAND_X[1]
    y0, y1 = h * _BAND_Y[0], h * _BAND_Y[1]
    cell = (x1 - x0) / _CELLS
    band_h = y1 - y0
    bits = []
    for i in range(_CELLS):
        box = (int(x0 + (i + 0.25) * cell), int(y0 + 0.25 * band_h),
               max(int(x0 + (i + 0.75) * cell), int(x0 + (i + 0.25) * cell) + 1),
               max(int(y0 + 0.75 * band_h), int(y0 + 0.25 * band_h) + 1))
        bits.append(1 if ImageStat.Stat(grey.crop(box)).mean[0] < 128 else 0)
    if bits[:2] != [1, 0] or bits[-2:] != [0, 1]:
        return None
    word = 0
    for b in bits[2:22]:
        word = (word << 1) | b
    number, check = word >> 4, word & 0xF
    return number if _checksum(number) == check else None


def _page_lines(k: int, n: int) -> list[str]:
    return [f"Page {k} of {n}.",
            "The number of this page is printed in its image only, not in this text."]


def write_number_pdf(path: str | os.PathLike[str], numbers: Sequence[int]) -> None:
    """A PDF with one page per number: the number's card as the page image, and a text layer that
    names the page but not the number (so only a look at the image answers)."""
    n = len(numbers)
    write_pdf(path, [(make_card(num, caption=f"Card {k}"), _page_lines(k, n))
                     for k, num in enumerate(numbers, start=1)])


def write_number_folder(path: str | os.PathLike[str], numbers: Sequence[int],
                        fmt: str = "png") -> list[str]:
    """One card image per number in the folder ``path`` (made if missing), named
    ``card-1.png`` ... in order; returns the file names."""
    os.makedirs(path, exist_ok=True)
    names = []
    for k, num in enumerate(numbers, start=1):
        name = f"card-{k}.{fmt}"
        make_card(num, caption=f"Card {k}").save(os.path.join(path, name))
        names.append(name)
    return names

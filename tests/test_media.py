"""Images as records (rlm_kernel.media) and files as contexts (rlm_kernel.loaders).

Every image here is generated at test time with Pillow; the PDFs too (a 20-page number-card PDF
with a text layer from the project's minimal writer, and an image-only one Pillow writes itself).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import subprocess
import sys
import time

import pytest
from PIL import Image

from rlm_kernel import loaders, media
from rlm_kernel.lm.cache import cache_key
from rlm_kernel.media import ImageData
from rlm_kernel.tasks.number_cards import (
    make_card,
    read_card,
    write_number_folder,
    write_number_pdf,
)

NUMBERS = [random.Random(7).randint(0, 9999) for _ in range(20)]


def png_bytes(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


@pytest.fixture(scope="module")
def number_pdf(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("pdf") / "numbers.pdf")
    write_number_pdf(path, NUMBERS)
    return path


# ------------------------------------------------------------------------------- normalising


def test_pil_images_bytes_paths_and_data_urls_normalise_to_the_same_kind_of_record(tmp_path):
    card = make_card(417)
    raw = png_bytes(card)
    path = tmp_path / "card.png"
    path.write_bytes(raw)
    from_pil = media.load_image(card)
    from_bytes = media.load_image(raw)
    from_path = media.load_image(str(path))
    from_pathlike = media.load_image(path)
    from_url = media.load_image("data:image/png;base64," + base64.b64encode(raw).decode())
    for rec in (from_pil, from_bytes, from_path, from_pathlike, from_url):
        assert (rec.width, rec.height, rec.mime) == (620, 877, "image/png")
        assert rec.size == card.size and rec.format == "PNG"
        assert read_card(rec.to_pil()) == 417
    # PNG bytes are kept as they are: the record's hash is the file's hash
    assert from_bytes.sha256 == from_path.sha256 == hashlib.sha256(raw).hexdigest()
    assert from_bytes.data is raw or from_bytes.data == raw
    assert media.load_image(from_pil) is from_pil


def test_jpeg_bytes_stay_jpeg_and_other_formats_are_sent_as_png():
    card = make_card(5)
    jpeg = io.BytesIO()
    card.save(jpeg, format="JPEG", quality=80)
    rec = media.load_image(jpeg.getvalue())
    assert rec.mime == "image/jpeg" and rec.data == jpeg.getvalue()
    bmp = io.BytesIO()
    card.save(bmp, format="BMP")
    rec = media.load_image(bmp.getvalue())
    assert rec.mime == "image/png" and rec.data.startswith(b"\x89PNG")
    assert read_card(rec.to_pil()) == 5


def test_the_hash_of_an_image_is_stable_and_follows_its_pixels():
    a1, a2 = media.load_image(make_card(12)), media.load_image(make_card(12))
    b = media.load_image(make_card(13))
    assert a1.sha256 == a2.sha256 and a1 == a2 and hash(a1) == hash(a2)
    assert a1.sha256 != b.sha256 and a1 != b
    assert a1.sha256 == hashlib.sha256(a1.data).hexdigest()
    assert len({a1, a2, b}) == 2


def test_transparent_and_palette_images_are_accepted():
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 128))
    pal = Image.new("P", (40, 30), 3)
    cmyk = Image.new("CMYK", (40, 30), (0, 0, 0, 255))
    for img in (rgba, pal, cmyk):
        rec = media.load_image(img)
        assert rec.size == (40, 30) and rec.mime == "image/png"
        assert media.thumbnail(rec).width == 128 or media.thumbnail(rec).width <= 128


def test_what_is_not_an_image_is_refused_with_a_message_that_says_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image file"):
        media.load_image(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="not an image Pillow can read"):
        media.load_image(b"hello, this is text")
    (tmp_path / "notes.png").write_text("not really a png")
    with pytest.raises(ValueError, match="notes.png"):
        media.load_image(str(tmp_path / "notes.png"))
    with pytest.raises(TypeError, match="PIL image, image bytes"):
        media.load_image(3.5)
    with pytest.raises(ValueError, match="base64"):
        media.load_image("data:image/png;base64,@@@")


def test_load_images_takes_one_image_or_many():
    card = make_card(1)
    assert media.load_images(None) == []
    assert len(media.load_images(card)) == 1
    assert len(media.load_images(png_bytes(card))) == 1
    assert len(media.load_images([card, png_bytes(card), media.load_image(card)])) == 3
    with pytest.raises(TypeError, match=r"not a dict \(keys 'page', 'image'\); pass the image"):
        media.load_images({"page": 1, "image": card})


def test_the_token_estimate_counts_images_as_images_not_as_base64():
    big = media.load_image(Image.new("RGB", (900, 900), "white"))
    text = "x" * 400
    assert media.estimate_tokens([media.user_message(text)]) == 100
    assert media.estimate_tokens([media.user_message(text, [big, big])]) == 100 + 2 * 765
    assert media.estimate_tokens([media.user_message(text, [big], detail="low")]) == 100 + 85


def test_image_repr_is_deterministic_and_shows_no_address():
    rec = media.load_image(make_card(9))
    assert repr(rec) == f"<image 620x877 PNG sha256:{rec.sha256[:12]}>"
    assert " at 0x" not in repr([rec, {"image": rec}])
    assert " at 0x" in repr(make_card(9))  # what a PIL image's repr would have put there


# ------------------------------------------------------------------------------- sizing


def test_fit_sizes_the_longest_edge_down_and_keeps_the_aspect():
    wide = media.load_image(Image.new("RGB", (3000, 1000), "white"))
    fitted = media.fit(wide, 1024)
    assert fitted.size == (1024, 341)
    tall = media.fit(media.load_image(make_card(77)), 300)
    assert max(tall.size) == 300 and abs(tall.width / tall.height - 620 / 877) < 0.01
    assert read_card(tall.to_pil()) == 77


def test_fit_returns_an_image_that_already_fits_unchanged():
    rec = media.load_image(make_card(3))
    assert media.fit(rec, 1024) is rec
    assert media.fit(rec, 0) is rec
    assert media.fit(rec, 877) is rec


def test_fit_keeps_jpeg_as_jpeg():
    out = io.BytesIO()
    noise((800, 600)).save(out, format="JPEG")
    rec = media.fit(media.load_image(out.getvalue()), 200)
    assert rec.mime == "image/jpeg" and rec.size == (200, 150)


def test_thumbnails_are_bounded_in_edge_and_bytes():
    for img in (make_card(123), noise((1500, 900)), Image.new("RGBA", (2000, 50), (0, 0, 0, 0))):
        thumb = media.thumbnail(media.load_image(img))
        assert max(thumb.size) <= media.THUMBNAIL_EDGE
        assert len(thumb.data) <= 12_000, (img.size, len(thumb.data))
        assert thumb.mime in ("image/png", "image/jpeg")
    assert max(media.thumbnail(media.load_image(make_card(1)), 64).size) == 64
    bundle = media.load_image(make_card(2))._repr_mimebundle_()
    assert bundle["text/plain"].startswith("<image 620x877")
    (mime, b64), = [(k, v) for k, v in bundle.items() if k != "text/plain"]
    assert len(base64.b64decode(b64)) <= 12_000


def test_a_thumbnail_of_a_card_still_reads_as_its_number():
    assert read_card(media.thumbnail(media.load_image(make_card(4242))).to_pil()) == 4242


# ------------------------------------------------------------------------------- messages, keys


def test_data_urls_round_trip():
    rec = media.load_image(make_card(8))
    url = media.data_url(rec)
    assert url.startswith("data:image/png;base64,")
    assert media.decode_data_url(url) == ("image/png", rec.data)


def test_user_messages_are_plain_text_without_images_and_openai_parts_with_them():
    a, b = media.load_image(make_card(1)), media.load_image(make_card(2))
    assert media.user_message("hi") == {"role": "user", "content": "hi"}
    msg = media.user_message("read these", [a, b])
    assert msg["role"] == "user"
    text, *images = msg["content"]
    assert text == {"type": "text", "text": "read these"}
    assert [p["type"] for p in images] == ["image_url", "image_url"]
    assert images[0]["image_url"] == {"url": media.data_url(a)}
    assert media.user_message("x", [a], detail="low")["content"][1]["image_url"]["detail"] == "low"
    assert media.message_images([msg]) == [a, b]


def test_cache_keys_cover_images_by_hash_never_by_bytes():
    a, b = media.load_image(make_card(1)), media.load_image(make_card(2))
    key_msg = media.key_message("read", [a, b])
    assert key_msg == media.key_messages([media.user_message("read", [a, b])])[0]
    flat = repr(key_msg)
    assert a.sha256 in flat and b.sha256 in flat and "base64" not in flat and len(flat) < 400
    keys = {cache_key("m", [media.key_message("read", imgs)]) for imgs in ([a], [b], [a, b], [b, a])}
    assert len(keys) == 4
    assert cache_key("m", [media.key_message("read", [a])]) == \
        cache_key("m", [media.key_message("read", [media.load_image(make_card(1))])])
    text_only = [media.user_message("plain")]
    assert media.key_messages(text_only) == text_only and media.key_messages(text_only)[0] is text_only[0]
    assert cache_key("m", [media.key_message("plain")]) == cache_key("m", [{"role": "user", "content": "plain"}])


def test_image_tokens_follow_the_published_rule():
    assert media.image_tokens(1024, 1024) == 765
    assert media.image_tokens(2048, 4096) == 1105
    assert media.image_tokens(4096, 8192, "low") == 85
    assert media.image_tokens(100, 100) == 255


# ------------------------------------------------------------------------------- describing


def test_describing_a_list_of_pages_groups_same_sized_images_by_index():
    img = media.load_image(make_card(1))
    ctx = [{"page": i + 1, "text": f"page {i + 1}", "image": img} for i in range(20)]
    text = media.describe_images(ctx)
    assert text.splitlines()[0].startswith("context holds 20 images alongside 20 text items")
    assert "- context[i]['image'] for i in range(0, 20): 20 images, 620x877 PNG" in text
    assert len(text) < 400


def test_describing_images_mixed_with_text_says_where_each_sits():
    a = media.load_image(make_card(1))
    b = Image.new("RGB", (1240, 1754), "white")
    c = png_bytes(Image.new("L", (64, 32)))
    ctx = ["intro text", a, {"figure": b, "caption": "Fig. 1"}, ("x", c)]
    found = media.find_images(ctx)
    assert [(s.where(), s.width, s.height) for s in found.spots] == [
        ("context[1]", 620, 877), ("context[2]['figure']", 1240, 1754), ("context[3][1]", 64, 32)]
    text = found.text()
    assert "context[1]: an image, 620x877 PNG" in text
    assert "context[2]['figure']: an image, 1240x1754" in text
    assert "3 images alongside 3 text items" in text
    assert "base64" not in text and "iVBOR" not in text


def test_a_lone_image_context_and_a_text_context_are_described_plainly():
    assert media.describe_images(media.load_image(make_card(1))).splitlines()[1] == \
        "- context: an image, 620x877 PNG"
    assert media.describe_images("just text") == ""
    assert media.describe_images({"a": "b", "c": ["d"]}) == ""


def test_many_scattered_images_are_summarised_within_a_bounded_number_of_lines():
    ctx = [media.load_image(Image.new("L", (10 + i, 10))) for i in range(100)]
    lines = media.find_images(ctx).lines(max_lines=12)
    assert len(lines) == 12 and lines[-1] == "... and 89 more images elsewhere"


def test_describing_is_bounded_on_huge_contexts():
    ctx = ["line"] * 2_000_000
    started = time.perf_counter()
    found = media.find_images(ctx)
    assert time.perf_counter() - started < 5  # generous liveness bound
    assert found.count == 0 and not found.complete


def test_describing_a_text_context_never_imports_pillow():
    code = ("import sys, rlm_kernel.media as m, rlm_kernel.loaders, rlm_kernel.scripted\n"
            "assert m.describe_images(['a', {'b': b'not an image'}] * 10) == ''\n"
            "assert 'PIL' not in sys.modules, 'Pillow was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------------------- loading files


def test_a_20_page_pdf_loads_as_page_images_plus_page_text(number_pdf):
    started = time.perf_counter()
    pages = loaders.load_pdf(number_pdf)
    elapsed = time.perf_counter() - started
    assert len(pages) == 20 and elapsed < 60  # generous liveness bound
    for k, page in enumerate(pages, start=1):
        assert page["page"] == k
        assert page["text"].startswith(f"Page {k} of 20.\n")
        assert "printed in its image only" in page["text"]
        assert isinstance(page["image"], ImageData)
        assert abs(page["image"].width - 1240) <= 2 and abs(page["image"].height - 1754) <= 2
    assert [read_card(p["image"].to_pil()) for p in pages] == NUMBERS
    assert len({p["image"].sha256 for p in pages}) == 20


def test_loading_the_same_pdf_twice_gives_the_same_image_hashes(number_pdf):
    first = [p["image"].sha256 for p in loaders.load_pdf(number_pdf, max_pages=3)]
    again = [p["image"].sha256 for p in loaders.load_pdf(number_pdf, max_pages=3)]
    assert first == again and len(first) == 3


def test_dpi_sets_the_rendered_size(number_pdf):
    page, = loaders.load_pdf(number_pdf, dpi=72, max_pages=1)
    assert (page["image"].width, page["image"].height) == (595, 842)


def test_an_image_only_pdf_written_by_pillow_loads_with_empty_text(tmp_path):
    cards = [make_card(n).convert("RGB") for n in (11, 22, 33)]
    path = tmp_path / "scan.pdf"
    cards[0].save(path, save_all=True, append_images=cards[1:], resolution=150)
    pages = loaders.load_pdf(path)
    assert [p["text"].strip() for p in pages] == ["", "", ""]
    assert [read_card(p["image"].to_pil()) for p in pages] == [11, 22, 33]


def test_a_file_that_is_not_a_pdf_is_refused_clearly(tmp_path):
    bad = tmp_path / "bad.pdf"
    bad.write_text("no pdf here")
    with pytest.raises(ValueError, match="not a PDF"):
        loaders.load_pdf(bad)
    with pytest.raises(FileNotFoundError, match="no PDF file"):
        loaders.load_pdf(tmp_path / "missing.pdf")


def test_an_image_folder_loads_in_natural_order_and_skips_other_files(tmp_path):
    numbers = list(range(100, 112))
    write_number_folder(tmp_path, numbers)
    (tmp_path / "README.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    os.mkdir(tmp_path / "sub")
    items, skipped = loaders.load_image_folder(tmp_path)
    assert [i["name"] for i in items] == [f"card-{k}.png" for k in range(1, 13)]
    assert [read_card(i["image"].to_pil()) for i in items] == numbers
    assert skipped == ["README.txt"]


def test_load_path_dispatches_on_what_the_path_is(tmp_path, number_pdf):
    write_number_folder(tmp_path / "cards", [1, 2])
    (tmp_path / "notes.txt").write_text("hello\n")
    pdf = loaders.load_path(number_pdf)
    assert pdf.kind == "pdf" and len(pdf.context) == 20 and pdf.source == os.path.abspath(number_pdf)
    assert pdf.summary().startswith("20 pages as images, 1240x17")
    folder = loaders.load_path(tmp_path / "cards")
    assert folder.kind == "images" and folder.summary() == "2 images"
    one = loaders.load_path(tmp_path / "cards" / "card-1.png")
    assert one.kind == "image" and one.summary() == "one image, 620x877 PNG"
    text = loaders.load_path(tmp_path / "notes.txt")
    assert (text.kind, text.context) == ("text", "hello\n")
    os.mkdir(tmp_path / "empty")
    with pytest.raises(ValueError, match="holds no images"):
        loaders.load_path(tmp_path / "empty")

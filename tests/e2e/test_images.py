"""Images end to end: a 20-page PDF through ``rlm-kernel run`` and ``replay``, and an image folder
through a real kernel with its ``%%llm`` cells re-run by hand.

Sub-calls go through the real openai client to the scripted server on 127.0.0.1, which refuses any
``image_url`` part an OpenAI endpoint would refuse and reads the number cards out of the pixels.
"""

from __future__ import annotations

import base64
import io
import os
import random
import subprocess
import sys

import nbformat
from PIL import Image
from support import SCRIPTED_ROOT, SCRIPTED_SUB, TEST_KEY, scripted_env

from rlm_kernel.tasks.number_cards import read_card, write_number_folder, write_number_pdf

NUMBERS = [random.Random(19).randint(0, 9999) for _ in range(20)]
SUM_Q = "What is the sum of the numbers on the pages?"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_MODEL", "RLM_SUB_MODEL")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "rlm_kernel", *args], capture_output=True,
                          text=True, env=full, timeout=300)


def _llm_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.metadata.get("rlm", {}).get("kind") == "llm"]


def _thumbnails(cell: nbformat.NotebookNode) -> list[tuple[str, Image.Image]]:
    out = []
    for o in cell.outputs:
        if o.output_type == "display_data":
            (mime,) = [k for k in o.data if k.startswith("image/")]
            out.append((o.metadata["rlm"]["image"],
                        Image.open(io.BytesIO(base64.b64decode(o.data[mime])))))
    return out


def test_a_20_page_pdf_run_sends_page_images_shows_thumbnails_and_replays_offline(
        tmp_path, scripted_server) -> None:
    pdf = tmp_path / "cards.pdf"
    write_number_pdf(pdf, NUMBERS)
    srv = scripted_server()
    out = tmp_path / "run.ipynb"
    proc = _cli("run", "--context", str(pdf), "--query", SUM_Q, "--model", SCRIPTED_ROOT,
                "--sub-model", SCRIPTED_SUB, "--output", str(out),
                env={"OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": TEST_KEY})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(sum(NUMBERS))

    # The server saw 20 well-formed image parts: one page each, sized down to 1024 px.
    received = list(srv.model.received_images)
    stats = srv.model.stats.snapshot()
    assert len(received) == 20 and stats["images"] == 20
    assert stats["by_policy"]["number_cards"] == 20 and stats["by_status"] == {200: 23}
    assert {(mime, max(w, h)) for _, w, h, mime, _ in received} == {("image/png", 1024)}

    # The notebook: a thumbnail per sub-call, hashes that match what was sent, and small.
    size = out.stat().st_size
    assert size < 1_000_000, size
    text = out.read_text()
    assert "data:image" not in text
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    cells = _llm_cells(nb)
    assert len(cells) == 20
    shown = []
    for cell in cells:
        ((sha, thumb),) = _thumbnails(cell)
        assert max(thumb.size) <= 128
        (rec,) = cell.metadata["rlm"]["call"]["images"]
        assert rec["sha256"] == sha and "thumb" not in rec
        shown.append((cell.metadata["rlm"]["call"]["batch_index"], sha, read_card(thumb)))
    shown.sort()
    assert sorted(s[1] for s in shown) == sorted(r[0] for r in received)
    assert [s[2] for s in shown] == NUMBERS
    header = nb.cells[1].metadata["rlm"]["header"]
    assert "context[i]['image'] for i in range(0, 20): 20 images" in header["context"]["images"]

    # Replay: no server, every response from the notebook; the cache keys cover the image hashes.
    srv.stop()
    replayed = tmp_path / "replayed.ipynb"
    proc = _cli("replay", str(out), "--output", str(replayed))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(sum(NUMBERS))
    again = nbformat.read(replayed, as_version=4)
    assert [c.metadata["rlm"]["call"]["cache_key"] for c in _llm_cells(again)] == \
        [c.metadata["rlm"]["call"]["cache_key"] for c in cells]
    assert all(len(_thumbnails(c)) == 1 for c in _llm_cells(again))


def test_replay_over_a_pdf_whose_pages_changed_says_the_context_differs(tmp_path) -> None:
    pdf = tmp_path / "cards.pdf"
    write_number_pdf(pdf, NUMBERS[:4])
    out = tmp_path / "run.ipynb"
    proc = _cli("run", "--context", str(pdf), "--query", SUM_Q, "--output", str(out))
    assert proc.returncode == 0 and proc.stdout.strip() == str(sum(NUMBERS[:4])), proc.stderr
    write_number_pdf(pdf, [n + 1 for n in NUMBERS[:4]])  # same text layer, other images
    proc = _cli("replay", str(out))
    assert proc.returncode != 0
    assert "differs from the recorded one" in proc.stderr, proc.stderr


def test_an_image_folder_in_a_kernel_and_a_rerun_llm_cell_resends_its_images(
        kernel_factory, tmp_path, scripted_server) -> None:
    numbers = [5, 50, 500, 5000]
    write_number_folder(tmp_path / "cards", numbers)
    srv = scripted_server()
    k = kernel_factory(scripted_env(srv.base_url), cwd=str(tmp_path))
    ran = k.run("%rlm load cards")
    assert ran.reply["status"] == "ok", ran.outputs_text
    assert "context = cards: 4 images" in ran.outputs_text
    ran = k.run("%%rlm\nWhat is the sum of the numbers on the images? [images_per_call=2]")
    assert ran.reply["status"] == "ok", ran.outputs_text
    assert "5555" in ran.outputs_text
    assert k.run("%rlm export run.ipynb").reply["status"] == "ok"
    cells = _llm_cells(nbformat.read(tmp_path / "run.ipynb", as_version=4))
    assert [len(_thumbnails(c)) for c in cells] == [2, 2]
    first = cells[0]
    sent = [rec["sha256"] for rec in first.metadata["rlm"]["call"]["images"]]

    # Re-run unchanged, the recorded cell shows its record; nothing is sent.
    assert k.run("%rlm config cache=false").reply["status"] == "ok"
    before = len(srv.model.received_images)
    ran = k.run(first.source)
    assert ran.reply["status"] == "ok", ran.outputs_text
    assert len(srv.model.received_images) == before
    # With --fresh it is asked again: the same images leave again, shown as thumbnails.
    head, _, body = first.source.partition("\n")
    ran = k.run(f"{head} --fresh\n{body}")
    assert ran.reply["status"] == "ok", ran.outputs_text
    assert [r[0] for r in list(srv.model.received_images)[before:]] == sent
    kinds = [(m["msg_type"], sorted(m["content"]["data"])) for m in ran.msgs
             if m["msg_type"] in ("display_data", "execute_result")]
    assert kinds[-1] == ("execute_result", ["text/plain"])
    assert [k_ for k_, _ in kinds[:-1]] == ["display_data", "display_data"]
    assert all(any(m.startswith("image/") for m in mimes) for _, mimes in kinds[:-1])
    assert "5, 50" in ran.outputs_text

    # Edited text, same images; and once the kernel no longer holds them, a clear error.
    ran = k.run(first.source.split("\n", 1)[0] + "\nWhich numbers are on these cards?")
    assert ran.reply["status"] == "ok" and "5, 50" in ran.outputs_text
    assert k.run("%rlm config keep_image_bytes=0").reply["status"] == "ok"
    ran = k.run(first.source)
    assert ran.reply["status"] == "error"
    assert "not held by this kernel" in ran.outputs_text

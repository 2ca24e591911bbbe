"""Image sub-calls in the REPL and the engine: what is sent, recorded, keyed, and told to the root.

Every call goes through the real openai client to the scripted server on 127.0.0.1, which checks
each ``image_url`` part as an OpenAI endpoint does and reads number cards out of the pixels.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image
from support import SCRIPTED_ROOT, SCRIPTED_SUB, TEST_KEY, count_prompt, repl_block

from rlm_kernel import RLM, media
from rlm_kernel.budgets import Budget
from rlm_kernel.config import RLMConfig
from rlm_kernel.image_store import ImageStore
from rlm_kernel.lm import LMClient
from rlm_kernel.notebook import llm_cell, runs_from_notebook, to_notebook
from rlm_kernel.prompts import IMAGES_NOTE
from rlm_kernel.repl import Repl
from rlm_kernel.scripted import ScriptedServer
from rlm_kernel.scripted.image_policy import IMAGE_PROMPT
from rlm_kernel.tasks.number_cards import make_card, read_card
from rlm_kernel.trajectory import Run, Step

Q = IMAGE_PROMPT


@pytest.fixture
def make_repl() -> Iterator[Callable[..., tuple[Repl, dict[str, Any]]]]:
    clients: list[LMClient] = []

    def make(server: ScriptedServer, *, context: Any = "ctx", depth: int = 0,
             **settings: Any) -> tuple[Repl, dict[str, Any]]:
        cfg = RLMConfig(base_url=server.base_url, api_key=TEST_KEY, model=SCRIPTED_ROOT,
                        sub_model=SCRIPTED_SUB, **settings)
        client = LMClient(cfg)
        clients.append(client)
        ns: dict[str, Any] = {}
        run = Run(run_id="rtest", query="q", depth=depth)
        repl = Repl(ns, context=context, client=client, config=cfg, run=run,
                    budget=Budget(cfg, client.ledger))
        return repl, ns

    yield make
    for client in clients:
        client.close()


def card(n: int) -> media.ImageData:
    return media.load_image(make_card(n))


# ------------------------------------------------------------------------------- llm / llm_batch


def test_llm_sends_its_images_and_records_sizes_hashes_and_thumbnails(scripted_server, make_repl):
    srv = scripted_server()
    repl, ns = make_repl(srv)
    assert ns["llm"](Q, images=[make_card(41), card(42)]) == "41, 42"
    (call,) = repl.run.subcalls.values()
    sent = [repl.images.fit(card(n), 1024) for n in (41, 42)]
    assert [im["sha256"] for im in call.images] == [s.sha256 for s in sent]
    assert [r[0] for r in srv.model.received_images] == [s.sha256 for s in sent]
    for rec in call.images:
        assert (rec["width"], rec["height"], rec["mime"]) == (620, 877, "image/png")
        thumb = Image.open(io.BytesIO(base64.b64decode(rec["thumb"])))
        assert max(thumb.size) <= media.THUMBNAIL_EDGE
    assert call.prompt == Q and call.prompt_chars == len(Q)
    # the images are counted as prompt tokens (the scripted model's rule is OpenAI's)
    assert call.usage.prompt_tokens >= 2 * media.image_tokens(620, 877)


def test_images_are_sized_down_to_image_max_edge_before_they_are_sent(scripted_server, make_repl):
    srv = scripted_server()
    repl, ns = make_repl(srv, image_max_edge=256)
    assert ns["llm"](Q, images=[make_card(7)]) == "7"
    (_, w, h, mime, _), = srv.model.received_images
    assert max(w, h) == 256 and mime == "image/png"
    repl, ns = make_repl(srv, image_max_edge=0)
    ns["llm"](Q, images=[make_card(8)])
    assert srv.model.received_images[-1][1:3] == (620, 877)


def test_image_detail_is_sent_when_set(scripted_server, make_repl):
    srv = scripted_server()
    _, ns = make_repl(srv, image_detail="low")
    ns["llm"](Q, images=[card(3)])
    assert srv.model.received_images[-1][4] == "low"


def test_llm_batch_takes_pairs_dicts_and_plain_prompts_in_one_batch(scripted_server, make_repl):
    srv = scripted_server()
    repl, ns = make_repl(srv)
    answers = ns["llm_batch"]([(Q, [card(1)]), {"prompt": Q, "images": [card(2), card(3)]},
                               count_prompt(4), (Q, card(5)), {"prompt": count_prompt(6)}])
    assert answers == ["1", "2, 3", "4", "5", "6"]
    calls = sorted(repl.run.subcalls.values(), key=lambda c: c.batch_index or 0)
    assert [len(c.images) for c in calls] == [1, 2, 0, 1, 0]
    assert srv.model.stats.snapshot()["images"] == 4


def test_a_generator_batch_sends_each_prompt_with_its_own_images(scripted_server, make_repl):
    srv = scripted_server()
    _, ns = make_repl(srv, concurrency=2)
    numbers = list(range(10, 22))
    assert ns["llm_batch"]((Q, [make_card(n)]) for n in numbers) == [str(n) for n in numbers]


def test_the_cache_key_covers_the_images_by_hash(scripted_server, make_repl):
    srv = scripted_server()
    repl, ns = make_repl(srv)
    ns["llm"](Q, images=[card(1)])
    ns["llm"](Q, images=[card(1)])  # same text, same image: served from the cache
    ns["llm"](Q, images=[card(2)])  # same text, another image: a new request
    assert srv.model.stats.sub_requests == 2
    c1, c2, c3 = repl.run.subcalls.values()
    assert c1.cache_key == c2.cache_key != c3.cache_key and c2.cached
    assert c1.cache_key != make_repl(srv, image_max_edge=300)[0].client.key_for(
        [media.key_message(Q, [media.fit(card(1), 300)])], SCRIPTED_SUB)


def test_text_only_cache_keys_are_unchanged_by_image_support(scripted_server, make_repl):
    from rlm_kernel.lm.cache import cache_key

    repl, ns = make_repl(scripted_server())
    ns["llm"](count_prompt(2))
    (call,) = repl.run.subcalls.values()
    assert call.cache_key == cache_key(SCRIPTED_SUB, [{"role": "user", "content": count_prompt(2)}],
                                       {})
    assert call.images == []


def test_bad_images_are_refused_before_anything_is_sent(scripted_server, make_repl):
    srv = scripted_server()
    _, ns = make_repl(srv)
    with pytest.raises(TypeError, match="llm_batch prompt 1: an image must be"):
        ns["llm_batch"]([(Q, [card(1)]), (Q, [3.5])])
    with pytest.raises(ValueError, match="the prompt: .*not an image"):
        ns["llm"](Q, images=[b"plain bytes"])
    with pytest.raises(TypeError, match="carries images already"):
        ns["llm"]((Q, [card(1)]), images=[card(2)])
    with pytest.raises(TypeError, match="keys 'prompt' and 'images'"):
        ns["llm_batch"]([{"prompt": Q, "image": card(1)}])
    assert srv.model.stats.requests == 0


def test_rlm_at_the_depth_limit_sends_the_contexts_images(scripted_server, make_repl):
    srv = scripted_server()
    _, ns = make_repl(srv, max_depth=0)
    assert ns["rlm"](Q, context=[{"image": card(11)}, {"image": card(12)}]) == "11, 12"


def test_the_session_store_keeps_what_was_sent_within_its_byte_budget():
    store = ImageStore(lambda: 10_000)
    images = [store.fit(card(n), 1024) for n in range(6)]  # 3 to 4 kB each
    assert store.bytes <= 10_000 and 2 <= len(store) < 6
    assert images[-1].sha256 in store and images[0].sha256 not in store
    assert store.get(images[-1].sha256) == images[-1]
    assert store.fit(card(5), 1024) is images[-1]  # held: not sized down again
    store = ImageStore(lambda: 0)
    store.put(card(1))
    assert len(store) == 0


# ------------------------------------------------------------------------------- notebook records


def test_llm_cells_show_thumbnails_and_keep_only_sizes_and_hashes_in_metadata(scripted_server,
                                                                              make_repl):
    repl, ns = make_repl(scripted_server())
    repl.current_step = 1
    ns["llm"](Q, images=[card(5), card(6)])
    (call,) = repl.run.subcalls.values()
    cell = llm_cell(repl.run, call)
    images = [o for o in cell["outputs"] if o["output_type"] == "display_data"]
    assert len(images) == 2 and cell["outputs"][-1]["data"]["text/plain"] == "5, 6"
    for out, rec in zip(images, call.images, strict=True):
        assert out["metadata"]["rlm"]["image"] == rec["sha256"]
        assert out["data"]["text/plain"].startswith("image ")
        assert "620x877 PNG" in out["data"]["text/plain"]
        (mime,) = [k for k in out["data"] if k.startswith("image/")]
        assert len(base64.b64decode(out["data"][mime])) < 12_000
    meta = cell["metadata"]["rlm"]["call"]["images"]
    assert [set(m) for m in meta] == [{"sha256", "mime", "width", "height", "bytes"}] * 2


def test_a_notebook_read_back_keeps_the_image_records_and_thumbnails(scripted_server, make_repl):
    repl, ns = make_repl(scripted_server())
    repl.current_step = 1
    repl.run.steps.append(Step(n=1, code="llm(...)"))
    ns["llm"](Q, images=[card(9)])
    nb = to_notebook([repl.run], {repl.run.run_id: repl.run})
    (call,) = runs_from_notebook(nb)["rtest"].subcalls.values()
    (original,) = repl.run.subcalls.values()
    assert call.images == original.images and call.response == "9"


# ------------------------------------------------------------------------------- the root is told


def _system_and_first(rlm: RLM) -> tuple[str, str]:
    first = rlm.transport.root_requests()[0]  # type: ignore[attr-defined]
    return first[0]["content"], first[1]["content"]


def test_the_root_is_told_where_the_images_are_never_their_pixels(rlm_inproc):
    pages = [{"page": k, "text": f"page {k}", "image": card(k)} for k in range(1, 6)]
    rlm = rlm_inproc([repl_block("FINAL('x')")])
    assert rlm.run("What is the sum of the numbers on the pages?", context=pages).answer == "x"
    system, first = _system_and_first(rlm)
    assert "llm(prompt, images=[img, ...])" in system and "each sized down to at most 1024" in system
    assert ("context holds 5 images alongside 5 text items" in first
            and "context[i]['image'] for i in range(0, 5): 5 images, 620x877 PNG" in first)
    assert "iVBOR" not in system + first and "base64" not in system + first


def test_a_text_context_gets_the_same_prompts_as_before(rlm_inproc):
    rlm = rlm_inproc([repl_block("FINAL('x')")])
    rlm.run("q", context="just text")
    system, first = _system_and_first(rlm)
    assert IMAGES_NOTE.strip()[:40] not in system and "images" not in first


def test_a_run_over_page_images_answers_with_image_sub_calls(rlm_http, scripted_server):
    srv = scripted_server()
    numbers = [3, 14, 159, 2653, 58979]
    pages = [{"page": k, "text": f"page {k}", "image": make_card(n)}
             for k, n in enumerate(numbers, start=1)]
    result = rlm_http(srv).run("What is the sum of the numbers on the pages?", context=pages)
    assert result.answer == str(sum(numbers))
    calls = [c for c in result.run.subcalls.values()]
    assert len(calls) == len(numbers) and all(len(c.images) == 1 for c in calls)
    sent = [read_card(Image.open(io.BytesIO(base64.b64decode(c.images[0]["thumb"])))) for c in
            sorted(calls, key=lambda c: c.batch_index or 0)]
    assert sent == numbers  # even the thumbnails still read as the numbers sent

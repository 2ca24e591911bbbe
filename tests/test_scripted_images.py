"""The scripted model's image path: multimodal messages over real HTTP, through the real openai client.

The server (``ScriptedServer`` on 127.0.0.1) checks every
``image_url`` part the way an OpenAI endpoint does and reads number cards out of the pixels; the
root policy's code is run in a plain namespace whose ``llm_batch`` sends each ``(text, images)``
prompt as a multimodal message over the same HTTP connection.
"""

from __future__ import annotations

import base64
import io
import re
from contextlib import redirect_stdout
from typing import Any

import openai
import pytest
from PIL import Image

from rlm_kernel import media
from rlm_kernel.prompts import first_user_message, step_feedback, system_prompt
from rlm_kernel.scripted import NOT_AN_LLM, ScriptedModel, ScriptedServer, policies
from rlm_kernel.scripted.image_policy import IMAGE_FALLBACK_ANSWER, IMAGE_PROMPT, parse_sum_query
from rlm_kernel.tasks.number_cards import make_card, read_card
from rlm_kernel.trajectory import ContextInfo

FENCE_RE = re.compile(r"```(?:repl|python)\n(.*?)```", re.S)


@pytest.fixture
def server():
    srv = ScriptedServer(ScriptedModel())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    c = openai.OpenAI(base_url=server.base_url, api_key="scripted", max_retries=0)
    yield c
    c.close()


def ask(client: openai.OpenAI, text: str, images: list[Any], **kw: Any) -> str:
    msg = media.user_message(text, [media.load_image(i) for i in images], **kw)
    r = client.chat.completions.create(model="scripted-sub", messages=[msg])
    return r.choices[0].message.content or ""


def png_url(img: Image.Image, mime: str = "image/png", fmt: str = "PNG") -> str:
    out = io.BytesIO()
    img.save(out, format=fmt)
    return f"data:{mime};base64,{base64.b64encode(out.getvalue()).decode()}"


# ------------------------------------------------------------------------------- the wire


def test_a_sub_call_with_card_images_is_answered_with_their_numbers_in_order(server, client):
    cards = [make_card(n) for n in (417, 12, 65535)]
    assert ask(client, IMAGE_PROMPT, cards) == "417, 12, 65535"
    sent = [media.load_image(c) for c in cards]
    assert [r[:4] for r in server.model.received_images] == [
        (s.sha256, s.width, s.height, "image/png") for s in sent]
    assert server.model.stats.snapshot()["by_policy"] == {"number_cards": 1}


def test_images_sized_down_or_sent_as_jpeg_still_read(client):
    small = media.fit(media.load_image(make_card(808)), 128)
    jpeg = io.BytesIO()
    make_card(909).save(jpeg, format="JPEG", quality=60)
    assert ask(client, IMAGE_PROMPT, [small, jpeg.getvalue()], detail="low") == "808, 909"


def test_an_image_without_a_card_reads_none_and_no_card_at_all_gets_the_not_an_llm_answer(client):
    blank = Image.new("RGB", (300, 400), "white")
    assert ask(client, IMAGE_PROMPT, [make_card(5), blank]) == "5, NONE"
    answer = ask(client, "What is in this photo?", [blank])
    assert answer == IMAGE_FALLBACK_ANSWER and "not an LLM" in answer


def test_text_only_requests_are_answered_as_before(client):
    r = client.chat.completions.create(model="scripted-sub", messages=[{"role": "user", "content": "hi"}])
    assert "not an LLM" in (r.choices[0].message.content or "")


def _part(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


BAD_REQUESTS = {
    "image in a system message": (
        [{"role": "system", "content": [{"type": "text", "text": "s"}, _part(png_url(make_card(1)))]},
         {"role": "user", "content": "u"}],
        "only allowed for messages with role 'user'"),
    "an http URL": (
        [{"role": "user", "content": [_part("https://example.invalid/cat.png")]}],
        "fetches nothing: send images as data URLs"),
    "invalid base64": (
        [{"role": "user", "content": [_part("data:image/png;base64,@@notbase64@@")]}],
        "base64 payload is invalid"),
    "JPEG labelled PNG": (
        [{"role": "user", "content": [_part(png_url(make_card(1), "image/png", "JPEG"))]}],
        "says image/png but holds JPEG"),
    "an unsupported type": (
        [{"role": "user", "content": [_part(png_url(make_card(1), "image/bmp", "BMP"))]}],
        "unsupported image type 'image/bmp'"),
    "a bad detail": (
        [{"role": "user", "content": [_part(png_url(make_card(1)), detail="ultra")]}],
        "detail must be one of"),
    "image_url not an object": (
        [{"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png;base64,"}]}],
        "must be an object with a string 'url'"),
    "bytes that are no image": (
        [{"role": "user", "content": [_part("data:image/png;base64,"
                                             + base64.b64encode(b"plain text").decode())]}],
        "does not hold a valid image"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_malformed_image_parts_are_refused_with_a_400_that_says_why(client, server, case):
    messages, expected = BAD_REQUESTS[case]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="scripted-sub", messages=messages)
    assert expected in info.value.message
    assert server.model.stats.snapshot()["by_status"] == {400: 1}


# ------------------------------------------------------------------------------- the root policy


class _Final(Exception):
    def __init__(self, value: str) -> None:
        self.value = value


def run_image_root(client: openai.OpenAI, query: str, context: Any, max_steps: int = 6
                   ) -> tuple[str, int, list[list[media.ImageData]]]:
    """Play the root conversation over HTTP; ``llm_batch`` takes ``(text, images)`` pairs and
    sends each as one multimodal sub-call. Returns (answer, steps, images sent per sub-call)."""
    info = ContextInfo.describe(context)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system_prompt(info)},
        {"role": "user", "content": first_user_message(query, info, max_steps)}]
    sent: list[list[media.ImageData]] = []
    ns: dict[str, Any] = {}

    def llm_batch(prompts: list[Any]) -> list[str]:
        out = []
        for text, images in prompts:
            recs = [media.fit(media.load_image(i), 1024) for i in images]
            sent.append(recs)
            r = client.chat.completions.create(model="scripted-sub",
                                               messages=[media.user_message(text, recs)])
            out.append(r.choices[0].message.content or "")
        return out

    def FINAL(answer: object) -> None:  # noqa: N802
        raise _Final(str(answer))

    ns.update(context=context, llm_batch=llm_batch, FINAL=FINAL)
    for step in range(1, max_steps + 1):
        r = client.chat.completions.create(model="scripted-root", messages=messages)
        reply = r.choices[0].message.content or ""
        messages.append({"role": "assistant", "content": reply})
        if m := re.search(r"^FINAL_VAR\((\w+)\)", reply, re.M):
            return str(ns[m.group(1)]), step, sent
        out = io.StringIO()
        try:
            with redirect_stdout(out):
                exec(FENCE_RE.findall(reply)[0], ns)
        except _Final as final:
            return final.value, step, sent
        messages.append({"role": "user", "content": step_feedback(step, out.getvalue(),
                                                                  steps_left=max_steps - step)})
    raise AssertionError(f"no FINAL after {max_steps} steps")


NUMBERS = [31, 4, 159, 2653, 58, 979]
SUM_Q = "What is the sum of the numbers on the pages?"


def pages(numbers: list[int]) -> list[dict[str, Any]]:
    return [{"page": k, "text": f"Page {k}", "image": media.load_image(make_card(n))}
            for k, n in enumerate(numbers, start=1)]


def test_the_root_policy_sums_the_numbers_with_one_image_per_sub_call(client, server):
    answer, steps, sent = run_image_root(client, SUM_Q, pages(NUMBERS))
    assert (answer, steps) == (str(sum(NUMBERS)), 3)
    assert [len(s) for s in sent] == [1] * len(NUMBERS)
    assert [read_card(s[0].to_pil()) for s in sent] == NUMBERS
    stats = server.model.stats.snapshot()
    assert stats["by_policy"] == {"image_sum": 3, "number_cards": len(NUMBERS)}


def test_the_root_policy_can_send_several_images_per_sub_call(client):
    answer, _, sent = run_image_root(client, SUM_Q + " [images_per_call=4]", pages(NUMBERS))
    assert answer == str(sum(NUMBERS)) and [len(s) for s in sent] == [4, 2]


def test_the_root_policy_finds_images_in_a_plain_list_and_says_so_when_there_are_none(client):
    imgs = [media.load_image(make_card(n)) for n in (7, 8)]
    assert run_image_root(client, "What is the total of the numbers in the images?", imgs)[0] == "15"
    answer, steps, sent = run_image_root(client, SUM_Q, ["no", "images", "here"])
    assert answer.startswith("No answer: the context holds no images") and sent == []


def test_the_sum_query_is_recognised_in_its_usual_phrasings():
    for q in (SUM_Q, "Sum of all the numbers on the slides?", "what's the total of the numbers "
              "printed in the scanned images", "Give the sum of numbers on all pages."):
        assert parse_sum_query(q), q
    assert not parse_sum_query("How many lines contain 'ERROR'?")
    assert not parse_sum_query("What is the sum of the numbers in the log?")


def test_the_policies_stay_labelled_as_not_an_llm():
    assert "not an LLM" in IMAGE_FALLBACK_ANSWER and "scripted" in NOT_AN_LLM
    assert "image_sum" in [p.name for p in policies.root_policies()]

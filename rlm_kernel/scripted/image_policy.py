"""The scripted model's image task: sum the numbers on page images, with per-prompt image sub-calls.

Not an LLM, and no vision: the sub policy reads *number cards* (:mod:`rlm_kernel.tasks.number_cards`, whose
docstring states the decoding rule) out of the images a sub-call carries, and answers the numbers
it finds, in order, separated by commas (``NONE`` for an image that holds no card). Anything else
about an image it cannot say, and it says so.

The root policy answers "What is the sum of the numbers on the pages?" (also "images", "cards",
"slides", "scans"): it peeks at the context (its type, where its images are), then sends the
images to sub-calls with ``llm_batch`` (one prompt per image, each prompt a ``(text, images)``
pair; ``[images_per_call=K]`` sends K images per prompt instead), adds the numbers up in code and
ends with ``FINAL_VAR(answer)``.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

from ..tasks.number_cards import read_card
from .policies import MAX_ATTEMPTS, RootView, _final_code, _repl, register_root_policy
from .vision import WireImage

__all__ = ["NAME", "SUB_NAME", "IMAGE_PROMPT", "answer_images", "parse_sum_query",
           "IMAGE_FALLBACK_ANSWER"]

NAME = "image_sum"
SUB_NAME = "number_cards"
IMAGE_PROMPT = ("Read the number printed on each of these page images, in order. Answer with the "
                "numbers only, separated by commas.")
IMAGE_FALLBACK_ANSWER = (
    "I am the rlm-kernel scripted demonstration model, not an LLM, and I cannot see images: the "
    "only thing I read in one is a number card (a pattern of black bars the project generates; "
    "see rlm_kernel.tasks.number_cards), and these images hold none. Set OPENAI_API_KEY (and "
    "OPENAI_BASE_URL) and choose a vision model with --sub-model to describe real images."
)

_SUM_RE = re.compile(
    r"\b(?:sum|total)\s+of\s+(?:all\s+)?(?:the\s+)?numbers\b.*?\b(?:on|in|of)\s+(?:all\s+)?"
    r"(?:the\s+)?(?:\w+\s+)?(?:pages?|images?|cards?|slides?|scans?|pictures?)\b", re.I | re.S)


def parse_sum_query(task: str) -> bool:
    return _SUM_RE.search(task) is not None


def answer_images(prompt: str, images: Sequence[WireImage]) -> tuple[str, str]:
    """``(policy name, answer)`` of a sub-call that carries ``images`` (the prompt is not needed:
    the rule reads cards whatever the question)."""
    numbers = [read_card(im.pil()) for im in images]
    if all(n is None for n in numbers):
        return "image_fallback", IMAGE_FALLBACK_ANSWER
    return SUB_NAME, ", ".join("NONE" if n is None else str(n) for n in numbers)


# The REPL code's way to find images anywhere in the context: anything with a width and a height
# (the kernel's ImageData, a PIL image), inside lists, tuples and dicts.
_IMAGES_IN = """\
def images_in(obj):
    if hasattr(obj, "width") and hasattr(obj, "height") and not isinstance(obj, (str, bytes)):
        return [obj]
    if isinstance(obj, dict):
        return [im for v in obj.values() for im in images_in(v)]
    if isinstance(obj, (list, tuple)):
        return [im for v in obj for im in images_in(v)]
    return []

images = images_in(context)
"""


def _per_call(view: RootView) -> int:
    raw = view.directives.get("images_per_call", "1")
    return max(1, int(raw)) if raw.isdigit() else 1


def _matches(view: RootView) -> bool:
    return parse_sum_query(view.task)


def _reply(view: RootView) -> str:
    total = view.marker("IMAGE_SUM")
    if total is not None:
        return (f"The numbers the sub-models read off the images add up to {total}; the answer is "
                "in the variable `answer`.\n\nFINAL_VAR(answer)")
    count = view.marker("IMAGE_COUNT")
    if count is None:
        code = _IMAGES_IN + textwrap.dedent("""\
            print("type:", type(context).__name__, "items:", len(context) if hasattr(context, "__len__") else 1)
            print("first item:", repr(context[0])[:300] if isinstance(context, (list, tuple)) and context else repr(context)[:300])
            print("sizes:", sorted({(im.width, im.height) for im in images}))
            print("IMAGE_COUNT:", len(images))
            """)
        return _repl("I look at the shape of the context and find its images first.", code)
    if count == "0":
        return _final_code("The context holds no images, so there are no numbers on pages to add.",
                           "No answer: the context holds no images (the scripted demonstration "
                           "model, not an LLM, reads numbers off page images only).")
    if view.attempts('print("IMAGE_SUM:"') >= MAX_ATTEMPTS:
        return _final_code(
            f"The image step failed {MAX_ATTEMPTS} times; I stop here rather than guess.",
            "No answer: the scripted demonstration model (not an LLM) could not read the numbers "
            f"off the images after {MAX_ATTEMPTS} attempts. See the step outputs for the errors.")
    k = _per_call(view)
    code = "import re\n" + _IMAGES_IN + textwrap.dedent(f"""\
        per_call = {k}
        prompts = [({IMAGE_PROMPT!r}, images[i:i + per_call])
                   for i in range(0, len(images), per_call)]
        answers = llm_batch(prompts)
        numbers = [int(x) for a in answers for x in re.findall(r"-?\\d+", a)]
        total = sum(numbers)
        answer = str(total)
        print("sub-calls:", len(prompts), "numbers:", numbers)
        print("IMAGE_SUM:", total)
        """)
    return _repl(
        f"I send the {count} images to sub-models ({k} per call, all at once with llm_batch), "
        "ask each for the number it shows, and add the numbers up in code.", code)


register_root_policy(NAME, _matches, _reply)

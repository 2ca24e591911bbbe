"""Constants and small builders shared by test modules (import them from here, not from a
conftest: tests/ and tests/e2e/ each have one, and ``import conftest`` would be ambiguous)."""

from __future__ import annotations

SCRIPTED_ROOT = "scripted-root"
SCRIPTED_SUB = "scripted-sub"
TEST_KEY = "sk-test-0123456789abcdefSECRET"


def scripted_env(base_url: str) -> dict[str, str]:
    """Environment for a kernel or CLI process that talks to a scripted server at ``base_url``."""
    return {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": TEST_KEY,
            "RLM_MODEL": SCRIPTED_ROOT, "RLM_SUB_MODEL": SCRIPTED_SUB}


def repl_block(code: str, prose: str = "") -> str:
    """A root reply holding one ```repl block (for ``root_replies``)."""
    return f"{prose}\n```repl\n{code}\n```" if prose else f"```repl\n{code}\n```"


def count_prompt(n: int, tag: object = "") -> str:
    """A sub-prompt the scripted sub policy answers exactly: with the number ``n``."""
    body = "\n".join(["x marks"] * n + [f"tag {tag}"])
    return ("Count the lines of the text below that contain the exact text 'x' (case-sensitive). "
            f"Answer with a number only.\n<text>\n{body}\n</text>")

"""The layers of docs/architecture.md hold: no module imports one of a higher layer.

Read from the source (every import statement, function-level ones included), not by importing.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlm_kernel"

#: docs/architecture.md, "Layers": top-level module or subpackage of rlm_kernel -> its layer.
LAYERS = {
    **dict.fromkeys(["errors", "states", "trajectory", "outputs", "parsing", "prompt_store",
                     "kernelspec", "tasks", "media", "image_store", "subprompt", "loaders",
                     "reasoning", "answer_dict", "custom_tools"], 0),
    **dict.fromkeys(["config", "prompts", "cells", "notebook", "observer", "trust", "forking",
                     "compare", "tool_mode"], 1),
    "lm": 2,
    "scripted": 3,
    **dict.fromkeys(["connect", "repl", "executor", "engine", "mirror", "budgets", "sandbox"], 4),
    **dict.fromkeys(["api", "importers"], 5),
    **dict.fromkeys(["kernel", "launch", "headless", "install"], 6),
    **dict.fromkeys(["evals", "cli", "__main__"], 7),
}


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    """(unit of rlm_kernel imported, line) for every import of the package in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = list(path.relative_to(PACKAGE).with_suffix("").parts)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level]
                parts = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("rlm_kernel"):
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:
                out.append((parts[0], node.lineno))
            else:  # "from . import x" at the package root: each name is a module
                out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("rlm_kernel."):
                    out.append((alias.name.split(".")[1], node.lineno))
    return out


def test_every_module_has_a_layer() -> None:
    units = {_unit(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert units <= set(LAYERS), sorted(units - set(LAYERS))


def test_no_module_imports_a_higher_layer() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        if unit == "__init__":
            continue  # the package's face re-exports the public API
        for target, line in _imports(path):
            if target in LAYERS and LAYERS[target] > LAYERS[unit]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({unit}, layer "
                             f"{LAYERS[unit]}) imports {target} (layer {LAYERS[target]})")
    assert not wrong, "\n".join(wrong)

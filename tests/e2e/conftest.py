"""End-to-end fixtures: real ``rlm`` kernels through the tests' one driver (``kernel_driver``).

The kernelspec lives in the session's private Jupyter path (``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kernel_driver import KernelDriver, Ran

__all__ = ["KernelDriver", "Ran"]


@pytest.fixture
def kernel_factory() -> Iterator[Any]:
    made: list[KernelDriver] = []

    def make(env: dict[str, str] | None = None, cwd: str | None = None,
             log: Any = None, kernel_name: str = "rlm") -> KernelDriver:
        k = KernelDriver(env, cwd, log, kernel_name=kernel_name)
        made.append(k)
        return k

    yield make
    for k in made:
        k.close()

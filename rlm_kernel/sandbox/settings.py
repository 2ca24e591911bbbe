"""The sandboxed kernel's launch settings, read from its environment before anything else.

Why not settings of :class:`rlm_kernel.config.RLMConfig`: they shape the sandbox, which is entered
once, before the kernel (and its settings) exist, and can never be widened afterwards; a
``%rlm config`` of them could only mislead. They come from the environment the kernel starts in:
set them where Jupyter starts, in the kernelspec's ``env``, or through ``rlm-kernel run``'s
``--workdir`` / ``--read``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LaunchSettings", "WORKDIR_ENV", "READ_ENV", "KEEP_ENV"]

WORKDIR_ENV = "RLM_SANDBOX_WORKDIR"  # the working folder (default: where the kernel starts)
READ_ENV = "RLM_SANDBOX_READ"  # more files/folders model code may read, os.pathsep-separated
KEEP_ENV = "RLM_SANDBOX_ENV"  # more environment variable names model code may see, ","-separated


@dataclass(frozen=True)
class LaunchSettings:
    workdir: str = ""
    read: tuple[str, ...] = ()
    keep_env: tuple[str, ...] = field(default=())

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LaunchSettings:
        return cls(
            workdir=environ.get(WORKDIR_ENV, ""),
            read=tuple(p for p in environ.get(READ_ENV, "").split(os.pathsep) if p),
            keep_env=tuple(n.strip() for n in environ.get(KEEP_ENV, "").split(",") if n.strip()))

    def to_environ(self) -> dict[str, str]:
        out = {}
        if self.workdir:
            out[WORKDIR_ENV] = self.workdir
        if self.read:
            out[READ_ENV] = os.pathsep.join(self.read)
        if self.keep_env:
            out[KEEP_ENV] = ",".join(self.keep_env)
        return out

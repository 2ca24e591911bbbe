"""Build hook: write the kernelspecs the wheel installs to share/jupyter/kernels/ (``rlm`` and
``rlm-sandboxed``).

They are generated from :mod:`rlm_kernel.kernelspec` (loaded by path: the package's dependencies
are not installed while building), with the logos of ``kernelspec/``, so each spec is declared in
one place. ipykernel ships its own kernelspec the same way.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

HERE = Path(__file__).resolve().parent
OUT = HERE / "build" / "kernelspec"


class KernelspecHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        spec = importlib.util.spec_from_file_location(
            "_rlm_kernelspec", HERE / "rlm_kernel" / "kernelspec.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if OUT.exists():
            shutil.rmtree(OUT)
        for name in module.KERNELS:
            out = OUT / name
            out.mkdir(parents=True)
            for logo in (HERE / "kernelspec").glob("logo-*"):
                shutil.copy(logo, out / logo.name)
            spec = module.kernel_json("python", sandboxed=name == module.SANDBOXED_KERNEL_NAME)
            (out / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
            build_data["shared_data"][str(out)] = f"share/jupyter/kernels/{name}"

"""``python -m rlm_kernel -f CONNECTION`` launches the kernel (``--sandbox -f CONNECTION``: the
sandboxed kernel, docs/sandbox.md); ``python -m rlm_kernel install`` installs the kernelspecs; any
other first word is an ``rlm-kernel`` CLI command."""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] == "install":
        from .install import main as install_main

        raise SystemExit(install_main(argv[1:]))
    if argv and not argv[0].startswith("-"):
        from .cli import main as cli_main

        raise SystemExit(cli_main(argv))
    from .kernelspec import SANDBOX_FLAG

    if SANDBOX_FLAG in argv:
        from .kernel.sandboxed import launch

        launch([a for a in argv if a != SANDBOX_FLAG])
        return
    from ipykernel.kernelapp import IPKernelApp

    from .kernel import RLMKernel

    IPKernelApp.launch_instance(kernel_class=RLMKernel)


if __name__ == "__main__":
    main()

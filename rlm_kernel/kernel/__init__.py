"""The ``rlm`` Jupyter kernel: ``RLMKernel`` and the parts it delegates to."""

from .kernel import RLMKernel

__all__ = ["RLMKernel"]

"""npmobilenet: MobileNet v1, v2, v3 and v4 in NumPy + Numba.

Specs (JSON data) expand into named graphs; a small autograd engine runs and trains them.
"""

import importlib

from .runtime import configure_openblas

configure_openblas()  # before anything imports numpy: OpenBLAS reads its settings when it loads

from . import functional
from .autograd import Tensor, no_grad
from .model import Model, build_model
from .architecture import available_specs, build_graph, load_spec
from .io import convert_file, load, save  # after .model: io builds models
# The public submodules are attributes after `import npmobilenet`, as torch.optim after
# `import torch`; `testing` needs hypothesis, so it is imported on first use (__getattr__).
from . import (activations, architecture, autograd, benchmark, data, geometry, inference, io, kinds,
               optim, profiler, runs, train, validate)
from .kernels.switch import use_reference_kernels
from .tracing import trace

__version__ = "0.1.0"

__all__ = ["Model", "Tensor", "available_specs", "build_graph", "build_model", "convert_file",
           "functional", "load", "load_spec", "no_grad", "save", "trace", "use_reference_kernels",
           "__version__",
           # the public submodules
           "activations", "architecture", "autograd", "benchmark", "data", "geometry", "inference",
           "io", "kinds", "optim", "profiler", "runs", "train", "validate"]

_LAZY = ("testing",)


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

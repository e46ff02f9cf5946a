"""npmobilenet: MobileNet v1, v2, v3 and v4 in NumPy + Numba.

Specs (JSON data) expand into named graphs; a small autograd engine runs and trains them.
"""

import os

# OpenBLAS workers busy-wait ~0.1 s after each GEMM, fighting Numba's threads for the cores;
# this makes them sleep at once. OpenBLAS reads it when numpy loads, so it must come first
# (it has no effect if numpy was imported before npmobilenet). A user's own setting wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import functional
from .autograd import Tensor, no_grad
from .model import Model, build_model
from .architecture import available_specs, build_graph, load_spec
from .io import convert_file, load, save  # after .model: io builds models

__version__ = "0.1.0"

__all__ = ["Model", "Tensor", "available_specs", "build_graph", "build_model", "convert_file",
           "functional", "load", "load_spec", "no_grad", "save", "__version__"]

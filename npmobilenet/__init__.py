"""npmobilenet: MobileNet v1 and v2 in NumPy + Numba.

Specs (JSON data) expand into named graphs; a small autograd engine runs and trains them.
"""

from . import functional
from .autograd import Tensor, no_grad
from .model import Model, build_model
from .spec import available_specs, build_graph, load_spec
from .io import convert_file, load, save  # after .model: io builds models

__version__ = "0.1.0"

__all__ = ["Model", "Tensor", "available_specs", "build_graph", "build_model", "convert_file",
           "functional", "load", "load_spec", "no_grad", "save", "__version__"]

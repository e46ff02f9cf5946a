"""npmobilenet: MobileNet v1 and v2 in NumPy + Numba."""

from . import functional
from .autograd import Tensor, no_grad

__version__ = "0.1.0"

__all__ = ["Tensor", "no_grad", "functional", "__version__"]

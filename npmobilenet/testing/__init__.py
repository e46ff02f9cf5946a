"""Tools to test implementations against npmobilenet: strategies, gradient and reference checks.

- ``strategies``: hypothesis strategies for convolution geometry, op inputs and model options.
- ``check_grad``: finite-difference check of any function built from npmobilenet ops.
- ``check_against_reference``: another implementation of an op, in its own layout, against ours.
"""

from ..geometry import resolve_padding
from .gradcheck import GradientMismatch, check_grad
from .reference import ReferenceMismatch, check_against_reference

__all__ = ["GradientMismatch", "ReferenceMismatch", "check_against_reference", "check_grad",
           "resolve_padding"]

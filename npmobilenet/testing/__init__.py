"""Tools to test implementations against npmobilenet: strategies, gradient and reference checks."""

from .gradcheck import GradientMismatch, check_grad

__all__ = ["GradientMismatch", "check_grad"]

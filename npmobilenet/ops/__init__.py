"""Primitive ops. Importing this package fills the registry."""

from . import conv, elementwise, fused, loss, norm, pool, tensor  # noqa: F401  (registration side effect)
from .registry import REGISTRY, apply

__all__ = ["REGISTRY", "apply"]

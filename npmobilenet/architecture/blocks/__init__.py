"""Block types: one module per kind of spec row, registered in :data:`BLOCKS`."""

from . import (conv, depthwise_separable, inverted_residual,  # noqa: F401  (registration)
               universal_inverted_bottleneck)
from .registry import BLOCKS, BlockType, register_block

__all__ = ["BLOCKS", "BlockType", "register_block"]

"""Node kinds: one module each, registered in :data:`KINDS` (see :mod:`.registry`)."""

from . import add, conv, dropout, linear, pool, squeeze_excite  # noqa: F401  (registration)
from .registry import KINDS, Layout, NodeKind, Param, SourceLayout, register_kind

__all__ = ["KINDS", "Layout", "NodeKind", "Param", "SourceLayout", "register_kind"]

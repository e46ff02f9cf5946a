"""The block table: what a row of a spec's ``body`` means.

A block type (one module in this package) declares the row fields it accepts, with their
checkers (errors name the JSON path), the spec families whose bodies may use it, and
``expand(row, builder)``, which appends the row's nodes to the
:class:`~npmobilenet.architecture.builder.Builder`, composing node kinds
(:mod:`npmobilenet.kinds`). Spec validation and graph expansion read this table; adding a block
type is one module here plus the specs that use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["BLOCKS", "BlockType", "register_block"]

Checker = Callable[[str, object], None]


@dataclass(frozen=True)
class BlockType:
    name: str  # the row's "type"
    families: tuple[str, ...]
    required: Mapping[str, Checker]
    optional: Mapping[str, Checker]
    expand: Callable
    check: Callable[[str, dict], None] | None = None  # rules across fields, after each field's
    defaults: Mapping[str, object] = field(default_factory=dict)


BLOCKS: dict[str, BlockType] = {}


def register_block(block: BlockType) -> BlockType:
    if block.name in BLOCKS:
        raise ValueError(f"block type {block.name!r} is already registered")
    BLOCKS[block.name] = block
    return block

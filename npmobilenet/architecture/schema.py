"""Validation of architecture specs: pure JSON data checked field by field.

Every error is a ValueError naming the JSON path and the offending value. The top level, the
``defaults`` and the ``head`` are checked here; each ``body`` row by its block type's own fields
(:data:`npmobilenet.architecture.blocks.BLOCKS`).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..validate import LIMITS, show
from .blocks import BLOCKS
from .builder import FAMILIES
from .fields import (ACTIVATIONS, INITS, PADDINGS, POOLS, batch_norm, boolean, channels, classes,
                     fields, image_size, multiplier, one_of, rate, string, text)

DEFAULT_FIELDS = {
    "input_size": image_size,
    "depth_multiplier": multiplier,
    "min_depth": channels,
    "divisible_by": channels,
    "activation": one_of(*ACTIVATIONS),
    "padding": one_of(*PADDINGS),
    "batch_norm": batch_norm,
    "init": one_of(*INITS),
}


def _hidden(path: str, value) -> None:
    """The head's optional hidden layer between the pool and the classifier (v3, v4)."""
    fields(path, value, {"depth": channels},
           {"activation": one_of(*ACTIVATIONS), "bias": boolean, "batch_norm": boolean,
            "min_multiplier": multiplier, "scaled": boolean})


HEAD_FIELDS = {
    "pool": one_of(*POOLS),
    "hidden": _hidden,
    "dropout": rate,
    "num_classes": classes,
}


def _row(family: str, path: str, row) -> None:
    if not isinstance(row, Mapping):
        raise ValueError(f"{path}: expected an object, got {show(row)}")
    if "type" not in row:
        raise ValueError(f"{path}.type: required field is missing")
    allowed = [name for name, block in BLOCKS.items() if family in block.families]
    if row["type"] not in allowed:
        raise ValueError(f"{path}.type: expected one of {', '.join(map(show, allowed))} in a "
                         f"{family} spec, got {show(row['type'])}")
    block = BLOCKS[row["type"]]
    fields(path, row, {"type": lambda *_: None, **block.required}, block.optional)
    if block.check is not None:
        block.check(path, row)


def _body(family: str):
    def check(path: str, value) -> None:
        if not isinstance(value, list) or not value:
            raise ValueError(f"{path}: expected a non-empty list of layers, got {show(value)}")
        if len(value) > LIMITS["layers"]:
            raise ValueError(f"{path}: {len(value)} layers, more than the limit of "
                             f"{LIMITS['layers']}")
        for index, row in enumerate(value):
            _row(family, f"{path}[{index}]", row)
    return check


def validate_spec(spec) -> None:
    """Raise ValueError naming the JSON path and value of the first problem in ``spec``."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"spec: expected an object, got {show(spec)}")
    family = spec.get("family")
    one_of(*FAMILIES)("family", family)
    defaults = dict(DEFAULT_FIELDS)
    if FAMILIES[family].rounding != "make_divisible":
        del defaults["divisible_by"]  # v1 rounds with max(int(depth * alpha), min_depth)
    fields("", spec, {"name": string, "family": lambda *_: None, "body": _body(family)},
           {"description": text,
            "defaults": lambda path, value: fields(path, value, {}, defaults),
            "head": lambda path, value: fields(path, value, {}, HEAD_FIELDS)})

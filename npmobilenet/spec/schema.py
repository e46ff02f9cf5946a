"""Validation of architecture specs: pure JSON data checked field by field.

Every error is a ValueError naming the JSON path and the offending value, e.g.
``body[3].stride: expected a positive integer, got "2"``. The same field checkers validate the
build options (``depth_multiplier``, ``padding``, ...), so a value is judged the same way whether
it comes from a spec's ``defaults`` or from a keyword argument.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

Checker = Callable[[str, object], None]

# Layer types each family's body may use; the family also fixes channel rounding and names.
FAMILY_LAYERS = {"v1": ("Conv", "DepthSepConv"), "v2": ("Conv", "InvertedResidual")}
ACTIVATIONS = ("relu6", "relu")
PADDINGS = ("SAME", "symmetric", "keras")
POOLS = ("slim", "global")
INITS = ("slim", "torchvision")


def show(value) -> str:
    """A value as it would appear in JSON (strings quoted), for error messages."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_int(path: str, value) -> None:
    if not (_is_int(value) and value > 0):
        raise ValueError(f"{path}: expected a positive integer, got {show(value)}")


def non_negative_int(path: str, value) -> None:
    if not (_is_int(value) and value >= 0):
        raise ValueError(f"{path}: expected a non-negative integer, got {show(value)}")


def positive_number(path: str, value) -> None:
    if not (_is_number(value) and value > 0):
        raise ValueError(f"{path}: expected a number > 0, got {show(value)}")


def rate(path: str, value) -> None:
    """A dropout rate: 0 <= value < 1."""
    if not (_is_number(value) and 0 <= value < 1):
        raise ValueError(f"{path}: expected a number in [0, 1), got {show(value)}")


def momentum(path: str, value) -> None:
    if not (_is_number(value) and 0 < value <= 1):
        raise ValueError(f"{path}: expected a number in (0, 1], got {show(value)}")


def size_pair(path: str, value) -> None:
    """A positive int or a [height, width] pair of positive ints (kernels, input sizes)."""
    if _is_int(value) and value > 0:
        return
    if not (isinstance(value, list | tuple) and len(value) == 2
            and all(_is_int(v) and v > 0 for v in value)):
        raise ValueError(f"{path}: expected a positive integer or [height, width] of positive "
                         f"integers, got {show(value)}")


def one_of(*choices: str) -> Checker:
    def check(path: str, value) -> None:
        if value not in choices:
            raise ValueError(f"{path}: expected one of {', '.join(map(show, choices))}, "
                             f"got {show(value)}")
    return check


def string(path: str, value) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{path}: expected a non-empty string, got {show(value)}")


def _object(path: str, value, required: Mapping[str, Checker], optional: Mapping[str, Checker]):
    """Check a JSON object with known required and optional fields; unknown fields are errors."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{path or 'spec'}: expected an object, got {show(value)}")
    prefix = f"{path}." if path else ""
    for key in value:
        if key not in required and key not in optional:
            allowed = ", ".join(sorted([*required, *optional]))
            raise ValueError(f"{prefix}{key}: unknown field (allowed: {allowed})")
    for key, check in required.items():
        if key not in value:
            raise ValueError(f"{prefix}{key}: required field is missing")
        check(f"{prefix}{key}", value[key])
    for key, check in optional.items():
        if key in value:
            check(f"{prefix}{key}", value[key])


def _batch_norm(path: str, value) -> None:
    _object(path, value, {}, {"eps": positive_number, "momentum": momentum})


LAYER_FIELDS: dict[str, tuple[dict[str, Checker], dict[str, Checker]]] = {
    # type: (required fields, optional fields)
    "Conv": ({"kernel": size_pair, "stride": positive_int, "depth": positive_int},
             {"min_multiplier": positive_number}),
    "DepthSepConv": ({"kernel": size_pair, "stride": positive_int, "depth": positive_int}, {}),
    "InvertedResidual": ({"t": positive_int, "c": positive_int, "n": positive_int,
                          "s": positive_int}, {}),
}

DEFAULT_FIELDS: dict[str, Checker] = {
    "input_size": size_pair,
    "depth_multiplier": positive_number,
    "min_depth": positive_int,
    "divisible_by": positive_int,
    "activation": one_of(*ACTIVATIONS),
    "padding": one_of(*PADDINGS),
    "batch_norm": _batch_norm,
    "init": one_of(*INITS),
}

HEAD_FIELDS: dict[str, Checker] = {
    "pool": one_of(*POOLS),
    "dropout": rate,
    "num_classes": non_negative_int,
}


def _layer(family: str, path: str, row) -> None:
    if not isinstance(row, Mapping):
        raise ValueError(f"{path}: expected an object, got {show(row)}")
    allowed = FAMILY_LAYERS[family]
    if "type" not in row:
        raise ValueError(f"{path}.type: required field is missing")
    if row["type"] not in allowed:
        raise ValueError(f"{path}.type: expected one of {', '.join(map(show, allowed))} in a "
                         f"{family} spec, got {show(row['type'])}")
    required, optional = LAYER_FIELDS[row["type"]]
    _object(path, row, {"type": lambda *_: None, **required}, optional)


def _body(family: str):
    def check(path: str, value) -> None:
        if not isinstance(value, list) or not value:
            raise ValueError(f"{path}: expected a non-empty list of layers, got {show(value)}")
        for index, row in enumerate(value):
            _layer(family, f"{path}[{index}]", row)
    return check


def validate_spec(spec) -> None:
    """Raise ValueError naming the JSON path and value of the first problem in ``spec``."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"spec: expected an object, got {show(spec)}")
    family = spec.get("family")
    one_of(*FAMILY_LAYERS)("family", family)
    defaults = dict(DEFAULT_FIELDS)
    if family != "v2":
        del defaults["divisible_by"]  # make-divisible rounding exists only in v2
    _object("", spec, {"name": string, "family": lambda *_: None, "body": _body(family)},
            {"description": string,
             "defaults": lambda path, value: _object(path, value, {}, defaults),
             "head": lambda path, value: _object(path, value, {}, HEAD_FIELDS)})

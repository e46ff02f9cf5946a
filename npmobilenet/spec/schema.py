"""Validation of architecture specs: pure JSON data checked field by field.

Every error is a ValueError naming the JSON path and the offending value, e.g.
``body[3].stride: expected an integer, got "2"``. Numbers have ranges (see
:data:`npmobilenet.validate.LIMITS`), so a spec cannot ask for more than a machine can build. The same field checkers validate the
build options (``depth_multiplier``, ``padding``, ...), so a value is judged the same way whether
it comes from a spec's ``defaults`` or from a keyword argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .. import validate
from ..validate import LIMITS, show

Checker = Callable[[str, object], None]

# Layer types each family's body may use; the family also fixes channel rounding and names.
FAMILY_LAYERS = {"v1": ("Conv", "DepthSepConv"), "v2": ("Conv", "InvertedResidual")}
ACTIVATIONS = ("relu6", "relu")
PADDINGS = ("SAME", "symmetric", "keras")
POOLS = ("slim", "global")
INITS = ("slim", "torchvision")
MAX_STRIDE = 16
MAX_KERNEL = 31


def integer(low: int, high: int) -> Checker:
    """An integer in ``[low, high]``."""
    def check(path: str, value) -> None:
        validate.integer(path, value, low, high)
    return check


def number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Checker:
    """A finite number between ``low`` and ``high``."""
    def check(path: str, value) -> None:
        validate.number(path, value, low, high, low_open=low_open, high_open=high_open)
    return check


channels = integer(1, LIMITS["channels"])
classes = integer(0, LIMITS["classes"])
repeats = integer(1, LIMITS["repeats"])
stride = integer(1, MAX_STRIDE)
expansion = integer(1, int(LIMITS["multiplier"]))
multiplier = number(0, LIMITS["multiplier"], low_open=True)
epsilon = number(0, 1, low_open=True)
momentum = number(0, 1, low_open=True)
rate = number(0, 1, high_open=True)  # dropout: 0 <= rate < 1


def size_pair(high: int) -> Checker:
    """A positive int up to ``high``, or a [height, width] pair of them (kernels, input sizes)."""
    def check(path: str, value) -> None:
        pair = value if isinstance(value, list | tuple) else [value]
        if not (len(pair) in (1, 2) and all(validate.is_integer(v) and 0 < v <= high for v in pair)
                and (len(pair) == 2 or not isinstance(value, list | tuple))):
            raise ValueError(f"{path}: expected an integer in [1, {high}] or [height, width] of "
                             f"them, got {show(value)}")
    return check


kernel_size = size_pair(MAX_KERNEL)
image_size = size_pair(LIMITS["image_side"])


def one_of(*choices: str) -> Checker:
    def check(path: str, value) -> None:
        if value not in choices:
            raise ValueError(f"{path}: expected one of {', '.join(map(show, choices))}, "
                             f"got {show(value)}")
    return check


MAX_NAME = 200


def string(path: str, value) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise ValueError(f"{path}: expected a non-empty string of at most {MAX_NAME} characters, "
                         f"got {show(value)}")


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
    _object(path, value, {}, {"eps": epsilon, "momentum": momentum})


LAYER_FIELDS: dict[str, tuple[dict[str, Checker], dict[str, Checker]]] = {
    # type: (required fields, optional fields)
    "Conv": ({"kernel": kernel_size, "stride": stride, "depth": channels},
             {"min_multiplier": multiplier}),
    "DepthSepConv": ({"kernel": kernel_size, "stride": stride, "depth": channels}, {}),
    "InvertedResidual": ({"t": expansion, "c": channels, "n": repeats, "s": stride}, {}),
}

DEFAULT_FIELDS: dict[str, Checker] = {
    "input_size": image_size,
    "depth_multiplier": multiplier,
    "min_depth": channels,
    "divisible_by": channels,
    "activation": one_of(*ACTIVATIONS),
    "padding": one_of(*PADDINGS),
    "batch_norm": _batch_norm,
    "init": one_of(*INITS),
}

HEAD_FIELDS: dict[str, Checker] = {
    "pool": one_of(*POOLS),
    "dropout": rate,
    "num_classes": classes,
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
        if len(value) > LIMITS["layers"]:
            raise ValueError(f"{path}: {len(value)} layers, more than the limit of "
                             f"{LIMITS['layers']}")
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

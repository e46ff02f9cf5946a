"""Field checkers for specs and build options: each takes a JSON path and a value and raises
ValueError naming both, e.g. ``body[3].stride: expected an integer, got "2"``.

Numbers have ranges (see :data:`npmobilenet.validate.LIMITS`), so a spec cannot ask for more than
a machine can build. The same checkers validate a spec's ``defaults`` and the keyword arguments
that override them, so a value is judged the same way wherever it comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .. import validate
from ..activations import ACTIVATIONS as ACTIVATION_TABLE
from ..validate import LIMITS, show

Checker = Callable[[str, object], None]

ACTIVATIONS = tuple(name for name in ACTIVATION_TABLE if name != "hard_sigmoid")
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
MAX_TEXT = 4000


def _string_up_to(limit: int) -> Checker:
    def check(path: str, value) -> None:
        if not isinstance(value, str) or not value or len(value) > limit:
            raise ValueError(f"{path}: expected a non-empty string of at most {limit} characters, "
                             f"got {show(value)}")
    return check


string = _string_up_to(MAX_NAME)  # names, endpoints
text = _string_up_to(MAX_TEXT)  # descriptions


def fields(path: str, value, required: Mapping[str, Checker], optional: Mapping[str, Checker]):
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


def batch_norm(path: str, value) -> None:
    fields(path, value, {}, {"eps": epsilon, "momentum": momentum})


def boolean(path: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{path}: expected true or false, got {show(value)}")



"""Checked values: the one place where numbers from users, files and specs are judged.

Every value that enters from outside (a command-line flag, an optimizer argument, a spec field,
a model file's metadata, a weight tensor) is checked here, where it enters, against a stated
range. Each checker takes the name to blame (a flag, a JSON path, a tensor name) and the value;
it returns the value as the expected Python type, or raises ``ValueError`` naming both. Floats
must be finite; integers must be true integers (not bools, not floats), and no value is ever
swapped for a default.

``LIMITS`` bounds what a file or spec may make this process allocate or loop over. They are
generous for every published MobileNet; a user with a genuinely larger model raises them, e.g.
``npmobilenet.validate.LIMITS["tensor_bytes"] = 8 << 30`` (see docs/threat-model.md).
"""

from __future__ import annotations

import json
import math
import numbers

import numpy as np

__all__ = ["LIMITS", "show", "is_integer", "integer", "number", "probability", "finite_array",
           "check_state_values"]

LIMITS = {
    "tensor_bytes": 2 << 30,       # one tensor read from a weights file
    "file_tensor_bytes": 8 << 30,  # all tensors of one weights file together
    "pickle_objects": 1_000_000,   # objects one .pth pickle may build
    "nesting_depth": 100,          # nested containers in a pickle or JSON document
    "zip_ratio": 200,              # declared / compressed size of a zip member
    "metadata_bytes": 64 << 20,    # an index, config or other metadata read whole from a file
    "channels": 1 << 16,           # channels of one layer (spec ``depth``, ``c``)
    "classes": 100_000,            # outputs of a classifier head
    "repeats": 256,                # ``n`` of one inverted-residual row
    "layers": 4096,                # nodes of one expanded graph
    "multiplier": 64.0,            # depth multiplier, expansion factor
    "image_side": 8192,            # input size, preprocessing resize
}


def show(value) -> str:
    """A value as it would appear in JSON (strings quoted), for error messages; long values cut."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        try:
            text = repr(value)
        except ValueError:  # an integer past Python's int-to-text digit limit
            text = f"<{type(value).__name__} too large to print>"
    return text if len(text) <= 80 else text[:77] + "..."


def is_integer(value) -> bool:
    """A true integer: not a bool, not a float with an integral value."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def integer(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (either bound may be None)."""
    if not is_integer(value):
        raise ValueError(f"{name}: expected an integer, got {show(value)}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}: expected an integer {_interval(low, high, False, False)}, "
                         f"got {show(value)}")
    return value


def number(name: str, value, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float in the interval from ``low`` to ``high``.

    ``low_open``/``high_open`` exclude the bound itself: ``number("lr", x, 0, low_open=True)``
    accepts exactly the finite positive numbers.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
        raise ValueError(f"{name}: expected a number, got {show(value)}")
    try:
        converted = float(value)
    except OverflowError:  # an integer beyond float range
        converted = math.inf
    if not math.isfinite(converted):
        raise ValueError(f"{name}: expected a finite number, got {show(value)}")
    if ((low is not None and (converted < low or (low_open and converted == low)))
            or (high is not None and (converted > high or (high_open and converted == high)))):
        raise ValueError(f"{name}: expected a number {_interval(low, high, low_open, high_open)}, "
                         f"got {show(value)}")
    return converted


def probability(name: str, value, *, one: bool = False) -> float:
    """A number in [0, 1) (decays, momenta, dropout, label smoothing); ``one`` admits 1."""
    return number(name, value, 0.0, 1.0, high_open=not one)


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def finite_array(name: str, array: np.ndarray) -> np.ndarray:
    """Refuse an array holding NaN or infinity, naming it and the first bad element."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(f"{name}: holds a non-finite value ({array[where] if where else array.item()}"
                         f" at index {where}); the weights are corrupt")
    return array


def check_state_values(state) -> None:
    """Refuse weights no trained network has: NaN/inf anywhere, a negative moving variance.

    ``state`` maps tensor names to arrays (a state dict in any naming); variances are
    recognised by name (``moving_variance``, ``running_var``).
    """
    for name, array in state.items():
        finite_array(name, np.asarray(array))
        if name.endswith(("moving_variance", "running_var")) and (np.asarray(array) < 0).any():
            raise ValueError(f"{name}: a moving variance is negative "
                             f"({float(np.min(array))}); the weights are corrupt")

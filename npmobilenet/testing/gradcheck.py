"""Finite-difference gradient checking of anything built from npmobilenet ops.

The check compares the scalar ``<v, f(x)>`` (``v`` a random cotangent) two ways for each input:
its central-difference derivative and the vector-Jacobian product from ``backward``. Small
inputs are checked element by element (so the report names the worst element); large ones along
random directions. Work in float64: float32 differences are dominated by rounding.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..autograd import Tensor

ELEMENTWISE_LIMIT = 256


class GradientMismatch(AssertionError):
    """A vector-Jacobian product disagrees with finite differences."""


def _scalar_output(fn, arrays, cotangent):
    out = fn(*(Tensor(a) for a in arrays))
    return float(np.vdot(cotangent, out.data))


def check_grad(fn: Callable[..., Tensor], *inputs: np.ndarray, eps: float = 1e-6, rtol: float = 1e-5,
               atol: float = 1e-8, directions: int = 3, seed: int = 0,
               names: tuple[str, ...] | None = None) -> None:
    """Raise ``GradientMismatch`` unless ``fn``'s gradients match central differences.

    Parameters
    ----------
    fn : callable
        Takes one Tensor per input and returns a Tensor.
    inputs : float64 ndarrays
        The point to check at; every input is differentiated.
    eps, rtol, atol : float
        Step, and tolerance ``|numeric - analytic| <= atol + rtol * max(|numeric|, |analytic|)``.
    directions : int
        Random directions tried for inputs larger than ``ELEMENTWISE_LIMIT`` elements.
    names : tuple of str
        Input names used in the report (default ``input 0``, ``input 1``, ...).
    """
    arrays = [np.array(a, dtype=np.float64) for a in inputs]
    names = names or tuple(f"input {i}" for i in range(len(arrays)))
    rng = np.random.default_rng(seed)

    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    if out.dtype != np.float64:
        raise GradientMismatch(f"check_grad needs float64 inputs and output, got output {out.dtype}")
    cotangent = rng.standard_normal(out.shape)
    out.backward(cotangent)
    for index, (tensor, name) in enumerate(zip(tensors, names)):
        analytic = np.zeros_like(arrays[index]) if tensor.grad is None else tensor.grad
        if analytic.shape != arrays[index].shape:
            raise GradientMismatch(f"{name}: gradient shape {analytic.shape}, expected {arrays[index].shape}")

        def directional(direction):
            plus = [a + eps * direction if i == index else a for i, a in enumerate(arrays)]
            minus = [a - eps * direction if i == index else a for i, a in enumerate(arrays)]
            return (_scalar_output(fn, plus, cotangent) - _scalar_output(fn, minus, cotangent)) / (2 * eps)

        if arrays[index].size <= ELEMENTWISE_LIMIT:
            numeric = np.zeros_like(arrays[index])
            for position in np.ndindex(arrays[index].shape):
                unit = np.zeros_like(arrays[index])
                unit[position] = 1.0
                numeric[position] = directional(unit)
            error = np.abs(numeric - analytic) - rtol * np.maximum(np.abs(numeric), np.abs(analytic))
            worst = np.unravel_index(np.argmax(error), error.shape) if error.size else None
            if worst is not None and error[worst] > atol:
                raise GradientMismatch(
                    f"{name} (shape {arrays[index].shape}): worst element {tuple(int(i) for i in worst)}: "
                    f"finite differences give {numeric[worst]:.10g}, backward gives {analytic[worst]:.10g} "
                    f"(|difference| {abs(numeric[worst] - analytic[worst]):.3g})")
            continue
        for trial in range(directions):
            direction = rng.standard_normal(arrays[index].shape)
            numeric = directional(direction)
            projected = float(np.vdot(analytic, direction))
            if abs(numeric - projected) > atol + rtol * max(abs(numeric), abs(projected)):
                raise GradientMismatch(
                    f"{name} (shape {arrays[index].shape}): along random direction {trial}: finite "
                    f"differences give {numeric:.10g}, backward gives {projected:.10g}")

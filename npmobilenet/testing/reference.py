"""Check another implementation of an op against npmobilenet's, in the other one's layout.

``check_against_reference`` draws cases with hypothesis, converts them to the user's layout,
compares the user's forward (and, if given, backward) with npmobilenet's and, on disagreement,
raises ``ReferenceMismatch`` describing the smallest counterexample hypothesis shrinks to.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis.errors import NoSuchExample

from ..autograd import Tensor
from ..ops import REGISTRY, apply
from .strategies import OpCase, op_cases

ACTIVATION_LAYOUTS = ("NHWC", "NCHW")
WEIGHT_LAYOUTS = {"conv2d": ("HWIO", "OIHW"), "depthwise_conv2d": ("HWCM", "OIHW")}
FLOAT32_TOLERANCE = 1e-4
DEFAULT_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): FLOAT32_TOLERANCE}
WEIGHT_NAMES = {"conv2d": "HWIO", "depthwise_conv2d": "HWCM"}  # npmobilenet's layout of "w"


class ReferenceMismatch(AssertionError):
    """The implementation under test disagrees with npmobilenet's reference op."""


class _Layout:
    """Converts npmobilenet's arrays to the user's layout and the user's results back."""

    def __init__(self, op: str, layout: str, weight_layout: str | None):
        if layout not in ACTIVATION_LAYOUTS:
            raise ValueError(f"layout: expected one of {ACTIVATION_LAYOUTS}, got {layout!r}")
        allowed = WEIGHT_LAYOUTS.get(op, (None,))
        weight_layout = allowed[0] if weight_layout is None else weight_layout
        if weight_layout not in allowed:
            raise ValueError(f"weight_layout: for {op} expected one of {allowed}, got {weight_layout!r}")
        self.op, self.nchw, self.weight_layout = op, layout == "NCHW", weight_layout

    def _activation(self, array, to_user):
        if not self.nchw or array.ndim != 4:
            return array
        return array.transpose((0, 3, 1, 2) if to_user else (0, 2, 3, 1))

    def _weight(self, w, to_user):
        if self.weight_layout not in ("OIHW",):
            return w
        if self.op == "conv2d":
            return w.transpose((3, 2, 0, 1) if to_user else (2, 3, 1, 0))
        if to_user:  # (kh, kw, C, M) -> (C*M, 1, kh, kw), output channel c*M + m
            kh, kw, c, m = w.shape
            return w.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
        cm, _, kh, kw = w.shape
        return w.reshape(self._channels, cm // self._channels, kh, kw).transpose(2, 3, 0, 1)

    def inputs_to_user(self, case: OpCase):
        self._channels = case.inputs[0].shape[-1] if case.inputs[0].ndim == 4 else None
        names = REGISTRY[self.op].input_names
        return [np.ascontiguousarray(self._weight(a, True) if name == "w" else self._activation(a, True))
                for name, a in zip(names, case.inputs)]

    def output_to_user(self, array):
        return np.ascontiguousarray(self._activation(array, True))

    def from_user(self, name: str, array):
        array = np.asarray(array)
        return self._weight(array, False) if name == "w" else self._activation(array, False)


def _relative_error(got, expected) -> float:
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-12)
    return float(np.max(np.abs(got - expected), initial=0.0)) / scale


def _difference(what: str, layout: str, got, expected, dtype, rtol) -> str | None:
    """None when ``got`` agrees with ``expected`` (both in npmobilenet's layout), else a report
    naming the worst element, its expected and obtained values, and a float32 hint if it fits."""
    if got.shape != expected.shape:
        return f"{what} differs: shape {got.shape}, expected {expected.shape}"
    error = _relative_error(got, expected)
    if error <= rtol:  # NaN compares false: a NaN anywhere is reported below
        return None
    gap = np.abs(got.astype(np.float64) - expected)
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(np.isnan(gap), np.inf, gap)), gap.shape))
    where = f" of the {layout} array" if layout else ""
    report = (f"{what} differs: relative error {error:.3g} > {rtol:g}; worst element {worst}{where}: "
              f"expected {float(expected[worst]):.10g}, got {float(got[worst]):.10g}")
    if dtype == np.float64 and (got.dtype == np.float32 or error < FLOAT32_TOLERANCE):
        cause = ("your kernel returned float32" if got.dtype == np.float32 else
                 "an error this size is float32 rounding")
        report += (f"\n  hint: {cause}; check a float32 kernel with dtype=np.float32 (relative "
                   f"tolerance {FLOAT32_TOLERANCE:g})")
    return report


def _describe(case: OpCase) -> str:
    shapes = ", ".join(f"{name} {a.shape}" for name, a in zip(REGISTRY[case.op].input_names, case.inputs))
    attrs = ", ".join(f"{k}={v.shape if isinstance(v, np.ndarray) else v!r}" for k, v in case.attrs.items())
    return f"{case.op}({shapes}{', ' if attrs else ''}{attrs})"


def _compare(case, user_fn, user_vjp, layout, dtype, rtol) -> str | None:
    """None when the user's implementation agrees on ``case``, else what differs."""
    case = case.astype(dtype)
    names = REGISTRY[case.op].input_names
    tensors = [Tensor(a, requires_grad=user_vjp is not None) for a in case.inputs]
    out = apply(case.op, *tensors, **case.attrs)
    user_inputs = layout.inputs_to_user(case)
    try:
        got = layout.from_user("out", user_fn(*user_inputs, **case.attrs))
    except Exception as error:  # the report must show what the user's code raised
        return f"forward raised {type(error).__name__}: {error}"
    activation = "NHWC" if out.ndim == 4 else ""
    problem = _difference("forward output", activation, np.asarray(got), out.data, dtype, rtol)
    if problem is not None:
        return problem
    if user_vjp is None:
        return None
    cotangent = np.random.default_rng(0).standard_normal(out.shape).astype(dtype)
    out.backward(cotangent)
    try:
        user_grads = user_vjp(layout.output_to_user(cotangent), *user_inputs, **case.attrs)
    except Exception as error:
        return f"backward raised {type(error).__name__}: {error}"
    for name, tensor, user_grad in zip(names, tensors, user_grads):
        where = WEIGHT_NAMES.get(case.op, "") if name == "w" else ("NHWC" if tensor.ndim == 4 else "")
        problem = _difference(f"gradient of {name}", where, np.asarray(layout.from_user(name, user_grad)),
                              tensor.grad, dtype, rtol)
        if problem is not None:
            return problem
    return None


def check_against_reference(op: str, user_fn: Callable, *, layout: str = "NHWC",
                            weight_layout: str | None = None, user_vjp: Callable | None = None,
                            dtype=np.float64, rtol: float | None = None, max_examples: int = 100,
                            cases=None) -> None:
    """Raise ``ReferenceMismatch`` if ``user_fn`` disagrees with npmobilenet's op ``op``.

    Parameters
    ----------
    op : str
        A registered op name, e.g. ``"depthwise_conv2d"``.
    user_fn : callable
        ``user_fn(*inputs, **attrs) -> ndarray`` in the user's layout; ``attrs`` are the op's
        keyword arguments (``stride``, ``padding``, ``dilation`` for convolutions).
    layout : "NHWC" or "NCHW"
        Layout of 4-D activations (inputs and output) as ``user_fn`` sees them.
    weight_layout : str
        ``"HWIO"``/``"OIHW"`` for conv2d, ``"HWCM"``/``"OIHW"`` (grouped, ``(C*M, 1, kh, kw)``) for
        depthwise_conv2d; defaults to npmobilenet's own.
    user_vjp : callable, optional
        ``user_vjp(grad_out, *inputs, **attrs) -> tuple`` of input gradients, in the user's layout.
    cases : hypothesis strategy, optional
        Draws ``OpCase``; defaults to ``strategies.op_cases(op)``.
    """
    if op not in REGISTRY:
        raise ValueError(f"op: unknown op {op!r}; registered: {sorted(REGISTRY)}")
    converter = _Layout(op, layout, weight_layout)
    dtype = np.dtype(dtype)
    rtol = DEFAULT_RTOL[dtype] if rtol is None else rtol
    strategy = op_cases(op) if cases is None else cases
    search = settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                      phases=[Phase.generate, Phase.shrink],
                      suppress_health_check=list(HealthCheck))
    fails = lambda case: _compare(case, user_fn, user_vjp, converter, dtype, rtol) is not None  # noqa: E731
    try:
        smallest = find(strategy, fails, settings=search)
    except NoSuchExample:
        return
    problem = _compare(smallest, user_fn, user_vjp, converter, dtype, rtol)
    raise ReferenceMismatch(f"{op}: {problem}\n  smallest counterexample: {_describe(smallest)}")

"""Linear algebra, shape and reduction ops."""

from __future__ import annotations

import numpy as np

from .registry import register


def _check_matmul(a, b):
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul: both operands need at least 2 dimensions, got a {a.shape}, b {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: inner dimensions differ, a {a.shape} @ b {b.shape}")


def matmul_vjp(g, saved, needs):
    a, b = saved
    ga = g @ np.swapaxes(b, -1, -2) if needs[0] else None
    gb = np.swapaxes(a, -1, -2) @ g if needs[1] else None
    return ga, gb


@register("matmul", ("a", "b"), matmul_vjp)
def matmul_forward(a, b):
    _check_matmul(a, b)
    return a @ b, (a, b)


@register("reshape", ("x",), lambda g, shape, needs: (g.reshape(shape),))
def reshape_forward(x, shape):
    try:
        return x.reshape(shape), x.shape
    except ValueError:
        raise ValueError(f"reshape: cannot reshape {x.shape} ({x.size} elements) to {tuple(shape)}") from None


@register("transpose", ("x",), lambda g, axes, needs: (g.transpose(np.argsort(axes)),))
def transpose_forward(x, axes):
    axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of {x.ndim} dimensions")
    return x.transpose(axes), axes


def _normalise_axis(op, x, axis):
    if axis is None:
        return tuple(range(x.ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not all(-x.ndim <= a < x.ndim for a in axes):
        raise ValueError(f"{op}: axis {axis} out of range for shape {x.shape}")
    return tuple(sorted(a % x.ndim for a in axes))


def _expand_reduced(g, x_shape, axes):
    """Broadcast a reduction's gradient back over the reduced axes."""
    kept = tuple(1 if i in axes else n for i, n in enumerate(x_shape))
    return np.broadcast_to(g.reshape(kept), x_shape).copy()


def sum_vjp(g, saved, needs):
    x_shape, axes = saved
    return (_expand_reduced(g, x_shape, axes),)


@register("sum", ("x",), sum_vjp)
def sum_forward(x, axis=None, keepdims=False):
    axes = _normalise_axis("sum", x, axis)
    return np.sum(x, axis=axes, keepdims=keepdims), (x.shape, axes)


def mean_vjp(g, saved, needs):
    x_shape, axes = saved
    count = int(np.prod([x_shape[a] for a in axes]))
    return (_expand_reduced(g, x_shape, axes) / np.asarray(count, dtype=g.dtype),)


@register("mean", ("x",), mean_vjp)
def mean_forward(x, axis=None, keepdims=False):
    axes = _normalise_axis("mean", x, axis)
    return np.mean(x, axis=axes, keepdims=keepdims), (x.shape, axes)

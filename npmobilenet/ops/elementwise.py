"""Elementwise ops: broadcasting add and mul, activations, dropout's mask."""

from __future__ import annotations

import numpy as np

from .registry import register


@register("add", ("a", "b"), lambda g, saved, needs: (g, g))
def add_forward(a, b):
    return a + b, None


def mul_vjp(g, saved, needs):
    a, b = saved
    return (g * b if needs[0] else None), (g * a if needs[1] else None)


@register("mul", ("a", "b"), mul_vjp)
def mul_forward(a, b):
    return a * b, (a, b)


def relu_vjp(g, out, needs):
    return (g * (out > 0),)


@register("relu", ("x",), relu_vjp)
def relu_forward(x):
    out = np.maximum(x, 0)
    return out, out


def relu6_vjp(g, out, needs):
    # The output is in (0, 6) exactly where the input is: the mask needs no saved input.
    return (g * ((out > 0) & (out < 6)),)


@register("relu6", ("x",), relu6_vjp)
def relu6_forward(x):
    out = np.clip(x, 0, 6)
    return out, out


@register("dropout", ("x",), lambda g, mask, needs: (g * mask,))
def dropout_forward(x, mask):
    """``mask`` holds 0 for dropped elements and 1/(1 - rate) for kept ones."""
    if mask.shape != x.shape or mask.dtype != x.dtype:
        raise ValueError(f"dropout: mask must match x ({x.shape} {x.dtype}), got {mask.shape} {mask.dtype}")
    return x * mask, mask

"""Elementwise ops: broadcasting arithmetic (add, sub, mul, div, pow, neg), activations,
dropout's mask.

Each vjp follows from the derivative: d(a - b) = da - db, d(a / b) = da / b - a db / b^2,
d(a^b) = b a^(b-1) da + a^b log(a) db. Gradients come back in the broadcast shape;
``backward`` sums them down to each input's shape.
"""

from __future__ import annotations

import numpy as np

from .registry import register


@register("add", ("a", "b"), lambda g, saved, needs: (g, g))
def add_forward(a, b):
    return a + b, None


@register("sub", ("a", "b"), lambda g, saved, needs: (g, -g if needs[1] else None))
def sub_forward(a, b):
    return a - b, None


@register("neg", ("x",), lambda g, saved, needs: (-g,))
def neg_forward(x):
    return -x, None


def mul_vjp(g, saved, needs):
    a, b = saved
    return (g * b if needs[0] else None), (g * a if needs[1] else None)


@register("mul", ("a", "b"), mul_vjp)
def mul_forward(a, b):
    return a * b, (a, b)


def div_vjp(g, saved, needs):
    b, out = saved
    return (g / b if needs[0] else None), (-g * out / b if needs[1] else None)


@register("div", ("a", "b"), div_vjp)
def div_forward(a, b):
    out = a / b
    return out, (b, out)


def pow_vjp(g, saved, needs):
    a, b, out = saved
    ga = g * b * a ** (b - np.asarray(1, b.dtype)) if needs[0] else None
    # d/db a^b = a^b log(a): defined for a > 0 only (NaN elsewhere, as in torch).
    gb = g * out * np.log(a) if needs[1] else None
    return ga, gb


@register("pow", ("a", "b"), pow_vjp)
def pow_forward(a, b):
    """a ** b elementwise with broadcasting (a negative base needs an integral exponent)."""
    out = a ** b
    return out, (a, b, out)


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

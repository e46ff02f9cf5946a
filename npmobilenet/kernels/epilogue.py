"""The epilogue of an inference step: add the folded bias, apply the activation, in one pass.

A convolution whose eval-mode batch norm was folded into its weights leaves ``y = x * W'``;
the epilogue turns it into ``act(y + b')`` while the values are in registers, instead of one
pass over memory for the bias and one or more for the activation. Every activation of
:mod:`npmobilenet.activations` has an epilogue: a ``(code, clip_max)`` pair, its ``epilogue``
attribute.

========  ==============  ============================================================
code      activation      value (``v = y + b``)
========  ==============  ============================================================
IDENTITY  identity        ``v``
CLAMP     relu, relu6     ``min(max(v, 0), clip_max)`` (``inf`` for ReLU, 6 for ReLU6)
HSIGMOID  hard_sigmoid    ``min(max(v + 3, 0), 6) * (1/6)``
HSWISH    hard_swish      ``v * (min(max(v + 3, 0), 6) * (1/6))``
========  ==============  ============================================================

These are the composites of :mod:`npmobilenet.functional` in their order of operations, with
constants in the data's dtype, so a float32 epilogue stays float32. :func:`activate` is inlined
into the kernels that apply an epilogue (this module's and the depthwise forward). The readable
spec is ``reference.activate_reference``, and ``reference.epilogue_reference`` of
:func:`bias_activate`.
"""

from __future__ import annotations

import numba
import numpy as np

from . import reference, switch
from .jit_cache import CACHE

IDENTITY, CLAMP, HSIGMOID, HSWISH = 0, 1, 2, 3
NONE = (IDENTITY, 0.0)

# Below this many elements the epilogue runs on one thread: waking the pool costs more than the
# pass (measured on 2 cores: ~40 us per parallel region).
PARALLEL_MIN_SIZE = 400_000


@numba.njit(inline="always", cache=CACHE)
def activate(v, code, clip_max, zero, three, six, sixth):
    """The activation ``code`` of one value (constants in the value's dtype)."""
    if code == CLAMP:
        return min(max(v, zero), clip_max)
    if code == HSIGMOID:
        return min(max(v + three, zero), six) * sixth
    if code == HSWISH:
        return v * (min(max(v + three, zero), six) * sixth)
    return v


def constants(dtype, clip_max) -> tuple:
    """``clip_max, 0, 3, 6, 1/6`` in ``dtype``: the arguments :func:`activate` takes after the
    code (a float64 constant would widen a float32 loop)."""
    kind = np.dtype(dtype).type
    return kind(clip_max), kind(0), kind(3), kind(6), kind(1 / 6)


@numba.njit(cache=CACHE)
def _span(y, bias, code, clip_max, zero, three, six, sixth, start, stop):
    for i in range(start, stop):
        for c in range(y.shape[1]):
            y[i, c] = activate(y[i, c] + bias[c], code, clip_max, zero, three, six, sixth)


@numba.njit(parallel=True, cache=CACHE)
def _chunks(y, bias, code, clip_max, zero, three, six, sixth, chunks):
    rows = y.shape[0]
    per = (rows + chunks - 1) // chunks
    for k in numba.prange(chunks):
        _span(y, bias, code, clip_max, zero, three, six, sixth, k * per, min(rows, (k + 1) * per))


def bias_activate(y2d: np.ndarray, bias: np.ndarray, epilogue=NONE) -> np.ndarray:
    """In place: ``y = act(y + bias)`` per channel of (M, C), ``epilogue`` = (code, clip_max)."""
    code, clip_max = epilogue
    if switch.REFERENCE:
        return reference.epilogue_reference(y2d, bias, code, clip_max)
    args = (y2d, bias, code, *constants(y2d.dtype, clip_max))
    if y2d.size >= PARALLEL_MIN_SIZE and numba.get_num_threads() > 1:
        _chunks(*args, 4 * numba.get_num_threads())
    else:
        _span(*args, 0, y2d.shape[0])
    return y2d

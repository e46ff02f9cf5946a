"""Numba depthwise convolution kernels: forward (with a fused bias + activation epilogue, see
:mod:`.epilogue`), grad-input and grad-weight, for NHWC activations.

Axis legend: x (N, H, W, C); w (kh, kw, C, M); out and g (N, OH, OW, C*M) with output channel
``c*M + m`` (TF order); stride (sh, sw), dilation (dh, dw), pads (top, bottom, left, right).
Tap (i, j) of output pixel (oh, ow) reads input pixel (oh*sh - top + i*dh, ow*sw - left + j*dw);
taps falling outside the input read zero, which the kernels handle by bounds (no padded copy).

Form ("9-tap" NHWC): for each output pixel, every kernel tap contributes one unit-stride loop
over channels, innermost, so LLVM vectorises it. Rows (N*OH, or N*H for grad-input) are spread
over Numba threads with ``prange`` when the layer is large enough to pay for it; grad-weight
gives each thread its own accumulator, summed at the end.
Hot loops index arrays in full instead of taking per-pixel views (``out[n, oh, ow]``): each
view updates the array's reference count atomically, and two threads contending for that count
cancelled the whole gain of the second thread.

Multiplier M > 1 runs the M == 1 kernels over the input repeated M times along channels
(channel c*M + m of the repeat is channel c of x): a copy of x, but MobileNet only uses M == 1.

Readable references (the spec these kernels implement): ``reference.depthwise_*_reference``;
``use_reference_kernels()`` (:mod:`.switch`) makes the entry points below run them instead.

Contract (the op layer validates, these functions do not): floating x, w, g of one dtype, which
the results keep; ``stride``, ``dilation`` pairs of positive ints; ``pads`` four non-negative
ints with the (dilated) kernel fitting the padded input.
"""

from __future__ import annotations

import functools
import types

import numba
import numpy as np

from . import epilogue as epilogues
from . import reference, switch
from .epilogue import activate
from .jit_cache import CACHE
from numba import prange

# fastmath without 'reassoc': every loop here vectorises across channels, which needs no
# reassociation, and keeping the tap order fixed keeps float64 results reproducible.
_FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}

# Layers with fewer multiply-accumulates than this run on one thread: below it, waking the
# thread pool costs more than it saves (measured in benchmarks/bench_depthwise.py).
PARALLEL_MIN_MACS = 1_500_000


def _renamed(function, suffix):
    """A copy of ``function`` under another name.

    Numba's on-disk cache keys entries by function name and signature but not by the
    ``parallel`` flag, so two variants of one function would load each other's machine code.
    """
    clone = types.FunctionType(function.__code__, function.__globals__, function.__name__ + suffix,
                               function.__defaults__, function.__closure__)
    clone.__qualname__ = function.__qualname__ + suffix
    return clone


def _jit(function):
    """Compile ``function`` twice: a serial and a ``prange``-parallel variant."""
    serial = numba.njit(fastmath=_FASTMATH, cache=CACHE)(_renamed(function, "_serial"))
    parallel = numba.njit(fastmath=_FASTMATH, cache=CACHE, parallel=True)(_renamed(function, "_parallel"))
    return serial, parallel


def _forward_rows(x, w, bias, code, clip_max, zero, three, six, sixth, sh, sw, dh, dw, top, left, out):
    """out (N, OH, OW, C) = act(depthwise(x (N, H, W, C), w (kh, kw, C)) + bias), the epilogue's
    activation ``code`` (with its constants in x's dtype).

    3x3 windows lying wholly inside the input take one expression over the nine taps (no
    accumulator round trips); border pixels and other kernel sizes add tap by tap.
    """
    n_batch, height, width, channels = x.shape
    kh, kw, _ = w.shape
    _, out_h, out_w, _ = out.shape
    is_3x3 = kh == 3 and kw == 3
    for row in prange(n_batch * out_h):
        n = row // out_h
        oh = row - n * out_h
        ih = oh * sh - top
        rows_inside = is_3x3 and ih >= 0 and ih + 2 * dh < height
        r1 = ih + dh
        r2 = ih + 2 * dh
        for ow in range(out_w):
            iw = ow * sw - left
            if rows_inside and iw >= 0 and iw + 2 * dw < width:
                j1 = iw + dw
                j2 = iw + 2 * dw
                for c in range(channels):
                    v = (bias[c] + x[n, ih, iw, c] * w[0, 0, c] + x[n, ih, j1, c] * w[0, 1, c]
                         + x[n, ih, j2, c] * w[0, 2, c] + x[n, r1, iw, c] * w[1, 0, c]
                         + x[n, r1, j1, c] * w[1, 1, c] + x[n, r1, j2, c] * w[1, 2, c]
                         + x[n, r2, iw, c] * w[2, 0, c] + x[n, r2, j1, c] * w[2, 1, c]
                         + x[n, r2, j2, c] * w[2, 2, c])
                    out[n, oh, ow, c] = activate(v, code, clip_max, zero, three, six, sixth)
                continue
            for c in range(channels):
                out[n, oh, ow, c] = bias[c]
            for i in range(kh):
                ihi = ih + i * dh
                if ihi < 0 or ihi >= height:
                    continue
                for j in range(kw):
                    iwj = iw + j * dw
                    if iwj < 0 or iwj >= width:
                        continue
                    for c in range(channels):
                        out[n, oh, ow, c] += x[n, ihi, iwj, c] * w[i, j, c]
            if code != epilogues.IDENTITY:
                for c in range(channels):
                    out[n, oh, ow, c] = activate(out[n, oh, ow, c], code, clip_max, zero, three, six, sixth)


def _grad_input_rows(g, w, sw, dw, left, row_taps, row_count, gx):
    """gx (N, H, W, C) from g (N, OH, OW, C), one input row per iteration.

    row_taps[ih, :row_count[ih]] are the (i, oh) pairs whose kernel row i of output row oh reads
    input row ih; each is scattered along that input row only, so threads never share a write.
    """
    n_batch, height, width, channels = gx.shape
    _, kw, _ = w.shape
    out_w = g.shape[2]
    for row in prange(n_batch * height):
        n = row // height
        ih = row - n * height
        gx[n, ih] = 0
        for a in range(row_count[ih]):
            i = row_taps[ih, a, 0]
            oh = row_taps[ih, a, 1]
            for ow in range(out_w):
                for j in range(kw):
                    iw = ow * sw - left + j * dw
                    if iw < 0 or iw >= width:
                        continue
                    for c in range(channels):
                        gx[n, ih, iw, c] += g[n, oh, ow, c] * w[i, j, c]


def _grad_weight_rows(x, g, sh, sw, dh, dw, top, left, partial):
    """partial (T, kh, kw, C): thread t sums x-tap * g over its share of the N*OH output rows.

    Each thread accumulates into an array of its own, copied out at the end: LLVM then knows
    the accumulator shares no memory with x and g and vectorises the channel loop (2-3 times
    faster than accumulating into ``partial`` directly; the same additions in the same order).
    """
    n_batch, height, width, channels = x.shape
    _, out_h, out_w, _ = g.shape
    n_parts, kh, kw, _ = partial.shape
    rows = n_batch * out_h
    for part in prange(n_parts):
        acc = np.zeros((kh, kw, channels), partial.dtype)
        for row in range(part * rows // n_parts, (part + 1) * rows // n_parts):
            n = row // out_h
            oh = row - n * out_h
            for ow in range(out_w):
                for i in range(kh):
                    ih = oh * sh - top + i * dh
                    if ih < 0 or ih >= height:
                        continue
                    for j in range(kw):
                        iw = ow * sw - left + j * dw
                        if iw < 0 or iw >= width:
                            continue
                        for c in range(channels):
                            acc[i, j, c] += x[n, ih, iw, c] * g[n, oh, ow, c]
        partial[part] = acc


_FORWARD = _jit(_forward_rows)
_GRAD_INPUT = _jit(_grad_input_rows)
_GRAD_WEIGHT = _jit(_grad_weight_rows)


def _parallel(macs: int) -> bool:
    return macs >= PARALLEL_MIN_MACS and numba.get_num_threads() > 1


def _out_hw(in_hw, kernel_hw, stride, dilation, pads):
    (h, wd), (kh, kw), (sh, sw), (dh, dw) = in_hw, kernel_hw, stride, dilation
    top, bottom, left, right = pads
    return (h + top + bottom - dh * (kh - 1) - 1) // sh + 1, (wd + left + right - dw * (kw - 1) - 1) // sw + 1


def _repeat_channels(x, m):
    """(N, H, W, C) -> (N, H, W, C*M) with channel c*M + k = channel c: the M == 1 form of M > 1."""
    return x if m == 1 else np.repeat(x, m, axis=3)


def depthwise_forward(x, w, stride, dilation, pads, bias=None, epilogue=epilogues.NONE, out=None):
    """Depthwise convolution with an optional fused bias + activation epilogue.

    Parameters
    ----------
    x : (N, H, W, C) float32 or float64
    w : (kh, kw, C, M), same dtype
    stride, dilation : (sh, sw), (dh, dw)
    pads : (top, bottom, left, right)
    bias : (C*M,) or None, added to every output pixel
    epilogue : (code, clip_max), the activation applied after the bias (see :mod:`.epilogue`)
    out : (N, OH, OW, C*M) C-contiguous array of x's dtype to write into, or None

    Returns
    -------
    out : (N, OH, OW, C*M), x's dtype; OH = (H + top + bottom - dh*(kh-1) - 1) // sh + 1
    """
    if switch.REFERENCE:
        return reference.depthwise_forward_reference(x, w, stride, dilation, pads, bias, epilogue, out)
    kh, kw, c, m = w.shape
    n = x.shape[0]
    oh, ow = _out_hw(x.shape[1:3], (kh, kw), stride, dilation, pads)
    dtype = x.dtype
    if out is None:
        out = np.empty((n, oh, ow, c * m), dtype=dtype)
    bias = np.zeros(c * m, dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    xs = np.ascontiguousarray(_repeat_channels(x, m))
    ws = np.ascontiguousarray(w.reshape(kh, kw, c * m))
    kernel = _FORWARD[_parallel(n * oh * ow * c * m * kh * kw)]
    code, clip_max = epilogue
    kernel(xs, ws, bias, code, *epilogues.constants(dtype, clip_max),
           stride[0], stride[1], dilation[0], dilation[1], pads[0], pads[2], out)
    return out


@functools.lru_cache(maxsize=256)
def _input_rows(size, out_size, k, s, d, before):
    """For each input row, the (kernel row, output row) pairs reading it.

    Returns taps (size, k, 2) int64 and count (size,): taps[p, :count[p]] are the valid pairs.
    Cached (read-only) because a training step asks for the same few geometries every time.
    """
    taps = np.zeros((size, k, 2), np.int64)
    count = np.zeros(size, np.int64)
    positions = np.arange(size)
    for i in range(k):
        t = positions + before - i * d  # o * s for the output o whose tap i reads this input
        hit = positions[(t >= 0) & (t % s == 0) & (t // s < out_size)]
        taps[hit, count[hit]] = np.stack([np.full(hit.size, i), t[hit] // s], axis=1)
        count[hit] += 1
    taps.flags.writeable = count.flags.writeable = False
    return taps, count


def depthwise_grad_input(g, w, input_hw, stride, dilation, pads):
    """Gradient of ``depthwise_forward`` (without epilogue) with respect to x.

    g : (N, OH, OW, C*M); w : (kh, kw, C, M); input_hw : (H, W). Returns (N, H, W, C), g's dtype.
    Stride 1 is the forward kernel over g with the kernel turned 180 degrees; larger strides
    visit, per input row, only the output rows that read it.
    """
    if switch.REFERENCE:
        return reference.depthwise_grad_input_reference(g, w, input_hw, stride, dilation, pads)
    kh, kw, c, m = w.shape
    n, out_h, out_w, _ = g.shape
    (height, width), (sh, sw), (dh, dw) = input_hw, stride, dilation
    g = np.ascontiguousarray(g)
    ws = w.reshape(kh, kw, c * m)
    gx = np.empty((n, height, width, c * m), dtype=g.dtype)
    parallel = _parallel(g.size * kh * kw)
    if (sh, sw) == (1, 1):
        _FORWARD[parallel](g, np.ascontiguousarray(ws[::-1, ::-1]), np.zeros(c * m, g.dtype),
                           epilogues.IDENTITY, *epilogues.constants(g.dtype, 0), 1, 1, dh, dw,
                           (kh - 1) * dh - pads[0], (kw - 1) * dw - pads[2], gx)
    else:
        row_taps, row_count = _input_rows(height, out_h, kh, sh, dh, pads[0])
        _GRAD_INPUT[parallel](g, np.ascontiguousarray(ws), sw, dw, pads[2], row_taps, row_count, gx)
    return gx if m == 1 else gx.reshape(n, height, width, c, m).sum(axis=-1)


def depthwise_grad_weight(x, g, kernel_hw, stride, dilation, pads):
    """Gradient of ``depthwise_forward`` (without epilogue) with respect to w.

    x : (N, H, W, C); g : (N, OH, OW, C*M); kernel_hw : (kh, kw). Returns (kh, kw, C, M), x's dtype.
    """
    if switch.REFERENCE:
        return reference.depthwise_grad_weight_reference(x, g, kernel_hw, stride, dilation, pads)
    kh, kw = kernel_hw
    c = x.shape[3]
    cm = g.shape[3]
    parallel = _parallel(g.size * kh * kw)
    partial = np.empty((numba.get_num_threads() if parallel else 1, kh, kw, cm), dtype=x.dtype)
    _GRAD_WEIGHT[parallel](np.ascontiguousarray(_repeat_channels(x, cm // c)), np.ascontiguousarray(g),
                           stride[0], stride[1], dilation[0], dilation[1], pads[0], pads[2], partial)
    return partial.sum(axis=0).reshape(kh, kw, c, cm // c)

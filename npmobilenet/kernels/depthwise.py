"""Numba depthwise convolution kernels: forward (with a fused bias + clamp epilogue), grad-input
and grad-weight, for NHWC activations.

Axis legend: x (N, H, W, C); w (kh, kw, C, M); out and g (N, OH, OW, C*M) with output channel
``c*M + m`` (TF order); stride (sh, sw), dilation (dh, dw), pads (top, bottom, left, right).
Tap (i, j) of output pixel (oh, ow) reads input pixel (oh*sh - top + i*dh, ow*sw - left + j*dw);
taps falling outside the input read zero, which the kernels handle by bounds (no padded copy).

Form ("9-tap" NHWC): for each output pixel, every kernel tap contributes one unit-stride loop
over channels, innermost, so LLVM vectorises it. Rows (N*OH, or N*H for grad-input) are spread
over Numba threads with ``prange`` when the layer is large enough to pay for it; grad-weight
gives each thread its own accumulator, summed at the end.

Multiplier M > 1 runs the M == 1 kernels over the input repeated M times along channels
(channel c*M + m of the repeat is channel c of x): a copy of x, but MobileNet only uses M == 1.

Contract (the op layer validates, these functions do not): floating x, w, g of one dtype, which
the results keep; ``stride``, ``dilation`` pairs of positive ints; ``pads`` four non-negative
ints with the (dilated) kernel fitting the padded input.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

# fastmath without 'reassoc': every loop here vectorises across channels, which needs no
# reassociation, and keeping the tap order fixed keeps float64 results reproducible.
_FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}

# Layers with fewer multiply-accumulates than this run on one thread: below it, waking the
# thread pool costs more than it saves (measured in benchmarks/bench_depthwise.py).
PARALLEL_MIN_MACS = 1 << 18


def _jit(function):
    """Compile ``function`` twice: a serial and a ``prange``-parallel variant."""
    serial = numba.njit(fastmath=_FASTMATH, cache=True)(function)
    parallel = numba.njit(fastmath=_FASTMATH, cache=True, parallel=True)(function)
    return serial, parallel


def _forward_rows(x, w, bias, has_clip, lo, hi, sh, sw, dh, dw, top, left, out):
    """out (N, OH, OW, C) = depthwise(x (N, H, W, C), w (kh, kw, C)) + bias, clamped if has_clip."""
    n_batch, height, width, channels = x.shape
    kh, kw, _ = w.shape
    _, out_h, out_w, _ = out.shape
    for row in prange(n_batch * out_h):
        n = row // out_h
        oh = row - n * out_h
        for ow in range(out_w):
            acc = out[n, oh, ow]
            for c in range(channels):
                acc[c] = bias[c]
            for i in range(kh):
                ih = oh * sh - top + i * dh
                if ih < 0 or ih >= height:
                    continue
                for j in range(kw):
                    iw = ow * sw - left + j * dw
                    if iw < 0 or iw >= width:
                        continue
                    xs = x[n, ih, iw]
                    ws = w[i, j]
                    for c in range(channels):
                        acc[c] += xs[c] * ws[c]
            if has_clip:
                for c in range(channels):
                    acc[c] = min(max(acc[c], lo), hi)


def _grad_input_rows(g, w, sh, sw, dh, dw, top, left, gx):
    """gx (N, H, W, C) from g (N, OH, OW, C), gathering the taps that read each input pixel."""
    n_batch, height, width, channels = gx.shape
    kh, kw, _ = w.shape
    _, out_h, out_w, _ = g.shape
    for row in prange(n_batch * height):
        n = row // height
        ih = row - n * height
        for iw in range(width):
            acc = gx[n, ih, iw]
            for c in range(channels):
                acc[c] = 0
            for i in range(kh):
                t = ih + top - i * dh  # oh * sh for the output row whose tap i reads ih
                if t < 0 or t % sh != 0 or t // sh >= out_h:
                    continue
                oh = t // sh
                for j in range(kw):
                    u = iw + left - j * dw
                    if u < 0 or u % sw != 0 or u // sw >= out_w:
                        continue
                    gs = g[n, oh, u // sw]
                    ws = w[i, j]
                    for c in range(channels):
                        acc[c] += gs[c] * ws[c]


def _grad_weight_rows(x, g, sh, sw, dh, dw, top, left, partial):
    """partial (T, kh, kw, C): thread t sums x-tap * g over its share of the N*OH output rows."""
    n_batch, height, width, channels = x.shape
    _, out_h, out_w, _ = g.shape
    n_parts, kh, kw, _ = partial.shape
    rows = n_batch * out_h
    for part in prange(n_parts):
        acc = partial[part]
        acc[:] = 0
        for row in range(part * rows // n_parts, (part + 1) * rows // n_parts):
            n = row // out_h
            oh = row - n * out_h
            for ow in range(out_w):
                gs = g[n, oh, ow]
                for i in range(kh):
                    ih = oh * sh - top + i * dh
                    if ih < 0 or ih >= height:
                        continue
                    for j in range(kw):
                        iw = ow * sw - left + j * dw
                        if iw < 0 or iw >= width:
                            continue
                        xs = x[n, ih, iw]
                        a = acc[i, j]
                        for c in range(channels):
                            a[c] += xs[c] * gs[c]


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


def depthwise_forward(x, w, stride, dilation, pads, bias=None, clip_max=None, out=None):
    """Depthwise convolution with an optional fused bias + clamp epilogue.

    Parameters
    ----------
    x : (N, H, W, C) float32 or float64
    w : (kh, kw, C, M), same dtype
    stride, dilation : (sh, sw), (dh, dw)
    pads : (top, bottom, left, right)
    bias : (C*M,) or None, added to every output pixel
    clip_max : float or None; when given the result is clamped to [0, clip_max]
        (6.0 for ReLU6, ``np.inf`` for ReLU)
    out : (N, OH, OW, C*M) C-contiguous array of x's dtype to write into, or None

    Returns
    -------
    out : (N, OH, OW, C*M), x's dtype; OH = (H + top + bottom - dh*(kh-1) - 1) // sh + 1
    """
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
    kernel(xs, ws, bias, clip_max is not None, dtype.type(0), dtype.type(np.inf if clip_max is None else clip_max),
           stride[0], stride[1], dilation[0], dilation[1], pads[0], pads[2], out)
    return out


def depthwise_grad_input(g, w, input_hw, stride, dilation, pads):
    """Gradient of ``depthwise_forward`` (without epilogue) with respect to x.

    g : (N, OH, OW, C*M); w : (kh, kw, C, M); input_hw : (H, W). Returns (N, H, W, C), g's dtype.
    """
    kh, kw, c, m = w.shape
    n = g.shape[0]
    gx = np.empty((n, input_hw[0], input_hw[1], c * m), dtype=g.dtype)
    kernel = _GRAD_INPUT[_parallel(g.size * kh * kw)]
    kernel(np.ascontiguousarray(g), np.ascontiguousarray(w.reshape(kh, kw, c * m)),
           stride[0], stride[1], dilation[0], dilation[1], pads[0], pads[2], gx)
    return gx if m == 1 else gx.reshape(n, input_hw[0], input_hw[1], c, m).sum(axis=-1)


def depthwise_grad_weight(x, g, kernel_hw, stride, dilation, pads):
    """Gradient of ``depthwise_forward`` (without epilogue) with respect to w.

    x : (N, H, W, C); g : (N, OH, OW, C*M); kernel_hw : (kh, kw). Returns (kh, kw, C, M), x's dtype.
    """
    kh, kw = kernel_hw
    c = x.shape[3]
    cm = g.shape[3]
    parallel = _parallel(g.size * kh * kw)
    partial = np.empty((numba.get_num_threads() if parallel else 1, kh, kw, cm), dtype=x.dtype)
    _GRAD_WEIGHT[parallel](np.ascontiguousarray(_repeat_channels(x, cm // c)), np.ascontiguousarray(g),
                           stride[0], stride[1], dilation[0], dilation[1], pads[0], pads[2], partial)
    return partial.sum(axis=0).reshape(kh, kw, c, cm // c)

"""Average pooling. Padded positions are excluded from each window's count (TF's rule; torch's
``count_include_pad=False``), so every output is a true mean of real pixels."""

from __future__ import annotations

import numpy as np

from ..geometry import conv_output_hw, pair, resolve_padding
from ..kernels.im2col import _tap_slices, pad_nhwc
from .registry import register


def _window_counts(input_hw, kernel, stride, pads, out_hw, dtype):
    """How many real pixels fall in each output window: (1, OH, OW, 1)."""
    ones = pad_nhwc(np.ones((1, *input_hw, 1), dtype=dtype), pads)
    counts = np.zeros((1, *out_hw, 1), dtype=dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows, cols = _tap_slices(i, j, out_hw, stride, (1, 1))
            counts += ones[:, rows, cols, :]
    return counts


def avg_pool2d_vjp(g, saved, needs):
    x_shape, kernel, stride, pads, counts = saved
    top, bottom, left, right = pads
    n, h, w, c = x_shape
    scaled = g / counts
    padded = np.zeros((n, h + top + bottom, w + left + right, c), dtype=g.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows, cols = _tap_slices(i, j, g.shape[1:3], stride, (1, 1))
            padded[:, rows, cols, :] += scaled
    return (np.ascontiguousarray(padded[:, top:top + h, left:left + w, :]),)


@register("avg_pool2d", ("x",), avg_pool2d_vjp)
def avg_pool2d_forward(x, kernel, stride=None, padding="VALID"):
    if x.ndim != 4:
        raise ValueError(f"avg_pool2d: x must be NHWC (N, H, W, C), got shape {x.shape}")
    try:
        kernel = pair(kernel, "kernel")
        stride = kernel if stride is None else pair(stride, "stride")
        pads = resolve_padding(padding, x.shape[1:3], kernel, stride, (1, 1))
        out_hw = conv_output_hw(x.shape[1:3], kernel, stride, (1, 1), pads, what="x")
    except ValueError as error:
        raise ValueError(f"avg_pool2d: {error} (x {x.shape})") from None
    padded = pad_nhwc(x, pads)
    total = np.zeros((x.shape[0], *out_hw, x.shape[3]), dtype=x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows, cols = _tap_slices(i, j, out_hw, stride, (1, 1))
            total += padded[:, rows, cols, :]
    counts = _window_counts(x.shape[1:3], kernel, stride, pads, out_hw, x.dtype)
    return total / counts, (x.shape, kernel, stride, pads, counts)


def global_avg_pool_vjp(g, x_shape, needs):
    n, h, w, c = x_shape
    return (np.broadcast_to(g[:, None, None, :] / np.asarray(h * w, dtype=g.dtype), x_shape).copy(),)


@register("global_avg_pool", ("x",), global_avg_pool_vjp)
def global_avg_pool_forward(x):
    """(N, H, W, C) -> (N, C): the mean over all spatial positions."""
    if x.ndim != 4:
        raise ValueError(f"global_avg_pool: x must be NHWC (N, H, W, C), got shape {x.shape}")
    return x.mean(axis=(1, 2)), x.shape

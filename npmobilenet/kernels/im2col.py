"""im2col / col2im for NHWC full convolutions.

Axis legend: x (N, H, W, C); columns (N, OH, OW, kh, kw, C), so that
``columns.reshape(N*OH*OW, kh*kw*C) @ w.reshape(kh*kw*C, Cout)`` is the convolution with an HWIO
weight, with no transpose of either operand. Each kernel tap is one strided slice copy.
"""

from __future__ import annotations

import numpy as np

from .geometry import Pads


def _tap_slices(i: int, j: int, out_hw, stride, dilation):
    """Slices of the padded input read by kernel tap (i, j) for every output pixel."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def pad_nhwc(x: np.ndarray, pads: Pads) -> np.ndarray:
    """Zero-pad H and W; returns ``x`` itself when there is nothing to pad."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def im2col(x: np.ndarray, kernel, stride, dilation, pads: Pads, out_hw) -> np.ndarray:
    """Gather every kernel window: (N, H, W, C) -> (N, OH, OW, kh, kw, C), contiguous."""
    n, _, _, c = x.shape
    kh, kw = kernel
    padded = pad_nhwc(x, pads)
    columns = np.empty((n, out_hw[0], out_hw[1], kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap_slices(i, j, out_hw, stride, dilation)
            columns[:, :, :, i, j, :] = padded[:, rows, cols, :]
    return columns


def col2im(columns: np.ndarray, input_hw, kernel, stride, dilation, pads: Pads) -> np.ndarray:
    """Adjoint of ``im2col``: scatter-add (N, OH, OW, kh, kw, C) windows back to (N, H, W, C)."""
    n, oh, ow, kh, kw, c = columns.shape
    top, bottom, left, right = pads
    h, w = input_hw
    padded = np.zeros((n, h + top + bottom, w + left + right, c), dtype=columns.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap_slices(i, j, (oh, ow), stride, dilation)
            padded[:, rows, cols, :] += columns[:, :, :, i, j, :]
    return np.ascontiguousarray(padded[:, top:top + h, left:left + w, :])

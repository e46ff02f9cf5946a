"""im2col / col2im for NHWC full convolutions.

Axis legend: x (N, H, W, C); columns (N, OH, OW, kh, kw, C), so that
``columns.reshape(N*OH*OW, kh*kw*C) @ w.reshape(kh*kw*C, Cout)`` is the convolution with an HWIO
weight, with no transpose of either operand. Taps outside the input read zero; neither
direction makes a padded copy of the image. The readable references (a padded copy, one tap at
a time) are ``reference.im2col_reference`` and ``reference.col2im_reference``.
"""

from __future__ import annotations

import numba
import numpy as np

from ..geometry import Pads
from . import reference, switch
from .jit_cache import CACHE


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


@numba.njit(parallel=True, cache=CACHE)
def _im2col_rows(x, kh, kw, sh, sw, dh, dw, top, left, out):
    """x (N, H, W*C) rows; out (N, OH, OW, kh, kw*C). A window row lying inside the input with
    dilation 1 is one run of kw*C contiguous values; other taps go one pixel at a time."""
    n_batch, height, row_size = x.shape
    _, out_h, out_w, _, window_row = out.shape
    channels = window_row // kw
    width = row_size // channels
    for row in numba.prange(n_batch * out_h):
        n = row // out_h
        oh = row - n * out_h
        for ow in range(out_w):
            iw0 = ow * sw - left
            contiguous = dw == 1 and iw0 >= 0 and iw0 + kw <= width
            for i in range(kh):
                ih = oh * sh - top + i * dh
                if ih < 0 or ih >= height:
                    for k in range(window_row):
                        out[n, oh, ow, i, k] = 0
                elif contiguous:
                    base = iw0 * channels
                    for k in range(window_row):
                        out[n, oh, ow, i, k] = x[n, ih, base + k]
                else:
                    for j in range(kw):
                        iw = iw0 + j * dw
                        inside = 0 <= iw < width
                        for c in range(channels):
                            out[n, oh, ow, i, j * channels + c] = x[n, ih, iw * channels + c] if inside else 0


def im2col(x: np.ndarray, kernel, stride, dilation, pads: Pads, out_hw, out=None) -> np.ndarray:
    """Gather every kernel window: (N, H, W, C) -> (N, OH, OW, kh, kw, C), contiguous.

    ``out``: an (N, OH, OW, kh, kw, C) C-contiguous array of x's dtype to fill (reused buffers).
    """
    if switch.REFERENCE:
        return reference.im2col_reference(x, kernel, stride, dilation, pads, out_hw, out)
    n, h, w, c = x.shape
    (kh, kw), (oh, ow) = kernel, out_hw
    if out is None:
        out = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    _im2col_rows(np.ascontiguousarray(x).reshape(n, h, w * c), kh, kw, stride[0], stride[1],
                 dilation[0], dilation[1], pads[0], pads[2], out.reshape(n, oh, ow, kh, kw * c))
    return out


def _inside(offset: int, size: int, out_size: int, s: int) -> tuple[slice, slice]:
    """Along one axis, for a tap reading input ``o*s + offset``: the (output, input) slices of
    the outputs whose read falls inside ``[0, size)``."""
    first = -(offset // s) if offset < 0 else 0  # smallest o with o*s + offset >= 0
    last = min(out_size, (size - 1 - offset) // s + 1) if offset < size else 0
    if last <= first:
        return slice(0, 0), slice(0, 0)
    start = first * s + offset
    return slice(first, last), slice(start, start + (last - first - 1) * s + 1, s)


def col2im(columns: np.ndarray, input_hw, kernel, stride, dilation, pads: Pads) -> np.ndarray:
    """Adjoint of ``im2col``: scatter-add (N, OH, OW, kh, kw, C) windows back to (N, H, W, C).
    Windows reading padding are skipped, so the sum goes straight into the unpadded result."""
    if switch.REFERENCE:
        return reference.col2im_reference(columns, input_hw, kernel, stride, dilation, pads)
    n, oh, ow, kh, kw, c = columns.shape
    (h, w), (sh, sw), (dh, dw) = input_hw, stride, dilation
    gx = np.zeros((n, h, w, c), dtype=columns.dtype)
    for i in range(kh):
        out_rows, in_rows = _inside(i * dh - pads[0], h, oh, sh)
        for j in range(kw):
            out_cols, in_cols = _inside(j * dw - pads[2], w, ow, sw)
            gx[:, in_rows, in_cols, :] += columns[:, out_rows, out_cols, i, j, :]
    return gx

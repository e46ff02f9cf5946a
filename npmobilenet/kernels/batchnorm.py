"""Numba kernels for batch normalisation fused with its activation, forward and backward.

Axis legend: x, g, out are (M, C) views of NHWC tensors (M = N*H*W rows, C channels, unit
stride along C so the inner loop vectorises). Per-channel sums accumulate in float64 whatever
the data dtype, so float32 statistics over millions of rows stay accurate. Rows are split into
chunks processed in parallel, each with its own partial sums, reduced at the end.

``clip_max`` selects the activation: ``np.inf`` for ReLU, 6 for ReLU6, and ``NO_ACTIVATION``
(NaN, which never compares true) for none.

Readable references (the formulas, in NumPy): ``reference.batch_statistics_reference``,
``normalize_activate_reference``, ``batch_norm_backward_reference``.
"""

from __future__ import annotations

import numba
import numpy as np

from . import reference, switch
from .jit_cache import CACHE

NO_ACTIVATION = np.nan
_ROWS_PER_CHUNK = 2048


def _chunks(rows: int) -> int:
    return max(1, min(rows // _ROWS_PER_CHUNK, 4 * numba.get_num_threads()))


@numba.njit(parallel=True, cache=CACHE)
def _channel_sums(x, shift, chunks):
    """Per-chunk sums of (x - shift) and (x - shift)^2, float64: (chunks, C) each."""
    rows, channels = x.shape
    s1 = np.zeros((chunks, channels))
    s2 = np.zeros((chunks, channels))
    per = (rows + chunks - 1) // chunks
    for k in numba.prange(chunks):
        for i in range(k * per, min(rows, (k + 1) * per)):
            for c in range(channels):
                d = x[i, c] - shift[c]
                s1[k, c] += d
                s2[k, c] += d * d
    return s1.sum(axis=0), s2.sum(axis=0)


def batch_statistics(x2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased variance per channel of (M, C), both float64 (C,)."""
    if switch.REFERENCE:
        return reference.batch_statistics_reference(x2d)
    rows = x2d.shape[0]
    shift = x2d[0].astype(np.float64)  # shifting by a sample avoids cancellation in E[x^2] - E[x]^2
    s1, s2 = _channel_sums(x2d, shift, _chunks(rows))
    mean_shifted = s1 / rows
    return shift + mean_shifted, np.maximum(s2 / rows - mean_shifted * mean_shifted, 0.0)


def normalize_activate(x, scale, offset, clip_max, out):
    """out = clip(x * scale + offset, 0, clip_max) per channel (no clip when clip_max is NaN)."""
    if switch.REFERENCE:
        return reference.normalize_activate_reference(x, scale, offset, clip_max, out)
    return _normalize_activate(x, scale, offset, clip_max, out)


@numba.njit(parallel=True, cache=CACHE)
def _normalize_activate(x, scale, offset, clip_max, out):
    rows, channels = x.shape
    activate = not np.isnan(clip_max)
    for i in numba.prange(rows):
        for c in range(channels):
            v = x[i, c] * scale[c] + offset[c]
            if activate:
                v = min(max(v, 0), clip_max)
            out[i, c] = v
    return out


@numba.njit(parallel=True, cache=CACHE)
def _masked_sums(g, x, mean, inv_std, scale, offset, clip_max, chunks):
    """Per-channel sums of gm and gm * x_hat, where gm is g masked by the activation (whose
    input ``x * scale + offset`` is recomputed as the forward pass did, to the last bit, rather
    than read back from the output: one array less to stream). The mask multiplies, as in the
    reference, rather than branches: a branch stops LLVM vectorising the loop (2.5x slower)."""
    rows, channels = g.shape
    activate = not np.isnan(clip_max)
    zero = x.dtype.type(0)
    s1 = np.zeros((chunks, channels))
    s2 = np.zeros((chunks, channels))
    per = (rows + chunks - 1) // chunks
    for k in numba.prange(chunks):
        for i in range(k * per, min(rows, (k + 1) * per)):
            for c in range(channels):
                gm = np.float64(g[i, c])
                if activate:
                    v = x[i, c] * scale[c] + offset[c]
                    gm *= np.float64((v > zero) & (v < clip_max))
                s1[k, c] += gm
                s2[k, c] += gm * ((x[i, c] - mean[c]) * inv_std[c])
    return s1.sum(axis=0), s2.sum(axis=0)


@numba.njit(parallel=True, cache=CACHE)
def _grad_input(g, x, mean, inv_std, scale, offset, sum_g, sum_g_xhat, count, clip_max, batch_stats, gx):
    rows, channels = g.shape
    activate = not np.isnan(clip_max)
    zero = x.dtype.type(0)
    for i in numba.prange(rows):
        for c in range(channels):
            gm = np.float64(g[i, c])
            if activate:
                v = x[i, c] * scale[c] + offset[c]
                gm *= np.float64((v > zero) & (v < clip_max))
            if batch_stats:
                x_hat = (x[i, c] - mean[c]) * inv_std[c]
                gx[i, c] = scale[c] * (gm - (sum_g[c] + x_hat * sum_g_xhat[c]) / count)
            else:
                gx[i, c] = scale[c] * gm
    return gx


def backward(g2d, x2d, mean, inv_std, scale, offset, clip_max, batch_stats, needs_input, reduction=None,
             grad_out=None):
    """Gradients (x, gamma, beta) of the fused op; ``mean``/``inv_std`` in the data dtype and
    ``scale``/``offset`` the forward pass's own (``gamma * inv_std``, ``beta - mean * scale``),
    so the activation's mask is recomputed from the same values. The input's gradient goes into
    ``grad_out`` when given: a new (M, C) array, or ``x2d`` itself (each element is read before
    it is written).

    ``reduction`` (synchronised batch norm): ``(sum, count)``, where ``sum(a, b)`` adds the
    per-channel sums over the processes and ``count`` is the global batch's rows; the input
    gradient then uses the global sums, gamma's and beta's stay this process's (the reference
    kernels have no such mode: it uses the fast ones).
    """
    if switch.REFERENCE and reduction is None:
        gx, g_gamma, g_beta = reference.batch_norm_backward_reference(
            g2d, x2d, mean, inv_std, scale, offset, clip_max, batch_stats, needs_input)
        if gx is not None and grad_out is not None:
            grad_out[...] = gx
            gx = grad_out
        return gx, g_gamma, g_beta
    rows = g2d.shape[0]
    sum_g, sum_g_xhat = _masked_sums(g2d, x2d, mean, inv_std, scale, offset, clip_max, _chunks(rows))
    dtype = g2d.dtype
    gx = None
    if needs_input:
        total_g, total_g_xhat, count = sum_g, sum_g_xhat, rows
        if reduction is not None:
            reduce, count = reduction
            total_g, total_g_xhat = reduce(sum_g, sum_g_xhat)
        gx = _grad_input(g2d, x2d, mean, inv_std, scale, offset, total_g.astype(dtype),
                         total_g_xhat.astype(dtype), dtype.type(count), clip_max, batch_stats,
                         np.empty_like(g2d) if grad_out is None else grad_out)
    return gx, sum_g_xhat.astype(dtype), sum_g.astype(dtype)

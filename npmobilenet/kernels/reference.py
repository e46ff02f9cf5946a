"""Slow, obviously-correct oracles for the depthwise kernels in ``depthwise.py``.

Written straight from the definition, one kernel tap at a time over a zero-padded copy of the
input; only the tests rely on them.

Axis legend: x (N, H, W, C); w (kh, kw, C, M); g and out (N, OH, OW, C*M) with output channel
``c*M + m``; stride (sh, sw), dilation (dh, dw), pads (top, bottom, left, right).
Tap (i, j) of output pixel (oh, ow) reads padded input pixel (oh*sh + i*dh, ow*sw + j*dw).
"""

from __future__ import annotations

import numpy as np


def _out_hw(in_hw, kernel_hw, stride, dilation, pads):
    (h, w), (kh, kw), (sh, sw), (dh, dw) = in_hw, kernel_hw, stride, dilation
    top, bottom, left, right = pads
    return (h + top + bottom - dh * (kh - 1) - 1) // sh + 1, (w + left + right - dw * (kw - 1) - 1) // sw + 1


def _tap(i, j, out_hw, stride, dilation):
    """Slices of the padded input that tap (i, j) reads for every output pixel."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return slice(i * dh, i * dh + (oh - 1) * sh + 1, sh), slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)


def _pad(x, pads):
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def depthwise_forward_reference(x, w, stride, dilation, pads):
    """out[n, oh, ow, c*M + m] = sum_ij xpad[n, oh*sh + i*dh, ow*sw + j*dw, c] * w[i, j, c, m]."""
    n, h, wd, c = x.shape
    kh, kw, _, m = w.shape
    out_hw = _out_hw((h, wd), (kh, kw), stride, dilation, pads)
    padded = _pad(x, pads)
    out = np.zeros((n, *out_hw, c, m), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap(i, j, out_hw, stride, dilation)
            out += padded[:, rows, cols, :, None] * w[i, j]
    return out.reshape(n, *out_hw, c * m)


def depthwise_grad_input_reference(g, w, input_hw, stride, dilation, pads):
    """Gradient of the forward with respect to x: scatter every tap back, then crop the padding."""
    top, bottom, left, right = pads
    n, oh, ow, _ = g.shape
    kh, kw, c, m = w.shape
    g5 = g.reshape(n, oh, ow, c, m)
    padded = np.zeros((n, input_hw[0] + top + bottom, input_hw[1] + left + right, c), dtype=g.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap(i, j, (oh, ow), stride, dilation)
            padded[:, rows, cols, :] += (g5 * w[i, j]).sum(axis=-1)
    return padded[:, top:top + input_hw[0], left:left + input_hw[1], :]


def depthwise_grad_weight_reference(x, g, kernel_hw, stride, dilation, pads):
    """Gradient with respect to w: gw[i, j, c, m] = sum_{n, oh, ow} xpad[tap (i, j)] * g[..., c*M + m]."""
    n, _, _, c = x.shape
    _, oh, ow, cm = g.shape
    kh, kw = kernel_hw
    g5 = g.reshape(n, oh, ow, c, cm // c)
    padded = _pad(x, pads)
    gw = np.zeros((kh, kw, c, cm // c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap(i, j, (oh, ow), stride, dilation)
            gw[i, j] = (padded[:, rows, cols, :, None] * g5).sum(axis=(0, 1, 2))
    return gw

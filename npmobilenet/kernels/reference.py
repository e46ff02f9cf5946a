"""The readable spec of every fast kernel: the same functions, written from their definitions.

Each function here takes the arguments of the kernel it specifies and returns the same result
(to rounding: the summation order differs), in plain NumPy, one kernel tap or one formula at a
time, over a zero-padded copy where padding is involved. Read these to learn what a kernel
computes; the Numba and strided versions beside them compute the same thing faster.
``npmobilenet.use_reference_kernels()`` runs a whole model on these (see :mod:`.switch`), and
``tests/kernels`` checks each against its kernel over random geometry.

Axis legend: x (N, H, W, C); depthwise w (kh, kw, C, M); g and out (N, OH, OW, C*M) with output
channel ``c*M + m``; stride (sh, sw), dilation (dh, dw), pads (top, bottom, left, right).
Tap (i, j) of output pixel (oh, ow) reads padded input pixel (oh*sh + i*dh, ow*sw + j*dw).
Batch-norm arrays are (M, C) views of NHWC tensors (M = N*H*W rows); ``clip_max`` selects the
activation ``min(max(v, 0), clip_max)``: NaN means none. An inference step's epilogue is a
``(code, clip_max)`` pair (see :mod:`.epilogue`).
"""

from __future__ import annotations

import numpy as np

from . import epilogue as _epilogue


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


def _into(out, result):
    """``result`` written into the caller's buffer ``out`` when one is given."""
    if out is None:
        return result
    out[...] = result
    return out


# -- depthwise convolution (kernels/depthwise.py) ------------------------------------------------

def depthwise_forward_reference(x, w, stride, dilation, pads, bias=None, epilogue=None, out=None):
    """out[n, oh, ow, c*M + m] = sum_ij xpad[n, oh*sh + i*dh, ow*sw + j*dw, c] * w[i, j, c, m],
    then ``+ bias`` and the activation of ``epilogue`` when given (the inference plan's)."""
    n, h, wd, c = x.shape
    kh, kw, _, m = w.shape
    out_hw = _out_hw((h, wd), (kh, kw), stride, dilation, pads)
    padded = _pad(x, pads)
    result = np.zeros((n, *out_hw, c, m), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap(i, j, out_hw, stride, dilation)
            result += padded[:, rows, cols, :, None] * w[i, j]
    result = result.reshape(n, *out_hw, c * m)
    if bias is not None:
        result += bias
    if epilogue is not None:
        result = activate_reference(result, *epilogue)
    return _into(out, result)


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


# -- im2col / col2im (kernels/im2col.py) ---------------------------------------------------------

def im2col_reference(x, kernel, stride, dilation, pads, out_hw, out=None):
    """columns[n, oh, ow, i, j, c] = xpad[n, oh*sh + i*dh, ow*sw + j*dw, c]: every window, laid
    out so that ``columns.reshape(N*OH*OW, kh*kw*C) @ w.reshape(kh*kw*C, Cout)`` convolves."""
    n, c = x.shape[0], x.shape[3]
    padded = _pad(x, pads)
    columns = np.empty((n, *out_hw, *kernel, c), dtype=x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows, cols = _tap(i, j, out_hw, stride, dilation)
            columns[:, :, :, i, j, :] = padded[:, rows, cols, :]
    return _into(out, columns)


def col2im_reference(columns, input_hw, kernel, stride, dilation, pads):
    """The adjoint of im2col: add every window entry back onto the padded pixel it was read
    from, then crop the padding (the gradient of the convolution's input)."""
    n, oh, ow, kh, kw, c = columns.shape
    top, bottom, left, right = pads
    padded = np.zeros((n, input_hw[0] + top + bottom, input_hw[1] + left + right, c), columns.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap(i, j, (oh, ow), stride, dilation)
            padded[:, rows, cols, :] += columns[:, :, :, i, j, :]
    return padded[:, top:top + input_hw[0], left:left + input_hw[1], :]


# -- batch norm fused with its activation (kernels/batchnorm.py) ---------------------------------

def batch_statistics_reference(x2d):
    """Per-channel mean and biased variance of (M, C), both float64 (C,)."""
    x64 = x2d.astype(np.float64)
    mean = x64.mean(axis=0)
    return mean, ((x64 - mean) ** 2).mean(axis=0)


def _activate(v, clip_max):
    return v if np.isnan(clip_max) else np.clip(v, 0, v.dtype.type(clip_max))


def normalize_activate_reference(x, scale, offset, clip_max, out):
    """out = clip(x * scale + offset, 0, clip_max) per channel; with scale = gamma / sqrt(var +
    eps) and offset = beta - mean * scale this is batch norm and its activation in one pass."""
    out[...] = _activate(x * scale + offset, clip_max)
    return out


def activate_reference(v, code, clip_max):
    """The activation of an epilogue ``(code, clip_max)``, as the composites of
    :mod:`npmobilenet.functional` compute it, constants in ``v``'s dtype."""
    kind = v.dtype.type
    gate = np.minimum(np.maximum(v + kind(3), kind(0)), kind(6)) * kind(1 / 6)
    if code == _epilogue.CLAMP:
        return np.minimum(np.maximum(v, kind(0)), kind(clip_max))
    if code == _epilogue.HSIGMOID:
        return gate
    if code == _epilogue.HSWISH:
        return v * gate
    return v


def epilogue_reference(y2d, bias, code, clip_max):
    """In place: y = act(y + bias), the epilogue of an inference step (see :mod:`.epilogue`)."""
    y2d[...] = activate_reference(y2d + bias, code, clip_max)
    return y2d


def batch_norm_backward_reference(g2d, x2d, mean, inv_std, scale, offset, clip_max, batch_stats,
                                  needs_input):
    """Gradients (x, gamma, beta) of ``out = act(gamma * x_hat + beta)``, x_hat = (x - mean) * inv_std.

    ``scale`` = gamma * inv_std and ``offset`` = beta - mean * scale are the forward pass's. The
    activation passes the gradient where its input ``x * scale + offset`` lies strictly inside
    (0, clip_max): gm = g there, 0 elsewhere. Then g_beta = sum gm and g_gamma = sum gm * x_hat
    over rows (summed in float64). With batch statistics the mean and variance depend on x too,
    which gives g_x = scale * (gm - (g_beta + x_hat * g_gamma) / M); with moving statistics
    (fixed) g_x = scale * gm.
    """
    activation_input = x2d * scale + offset
    gm = g2d if np.isnan(clip_max) else g2d * ((activation_input > 0) & (activation_input < clip_max))
    x_hat = (x2d - mean) * inv_std
    dtype = g2d.dtype
    g_beta = gm.sum(axis=0, dtype=np.float64).astype(dtype)
    g_gamma = (gm * x_hat).sum(axis=0, dtype=np.float64).astype(dtype)
    gx = None
    if needs_input:
        if batch_stats:
            gx = scale * (gm - (g_beta + x_hat * g_gamma) / dtype.type(g2d.shape[0]))
        else:
            gx = scale * gm
    return gx, g_gamma, g_beta

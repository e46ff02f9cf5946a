"""torch versions of every registered op, written independently of npmobilenet's code.

Each twin takes torch tensors laid out as npmobilenet's (NHWC, HWIO, (kh, kw, C, M)) plus the
op's attributes, and returns the result in the same layout. TF's SAME padding is computed here
from its definition and applied with an explicit asymmetric F.pad.
"""

import math

import torch
import torch.nn.functional as F


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _explicit_pads(padding, size, kernel, stride, dilation):
    """(top, bottom, left, right) for any of the four padding forms."""
    if padding == "VALID":
        return 0, 0, 0, 0
    if padding == "SAME":
        pads = []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    if isinstance(padding, int):
        return (padding,) * 4
    (top, bottom), (left, right) = padding
    return top, bottom, left, right


def _nchw(x):
    return x.permute(0, 3, 1, 2)


def _nhwc(x):
    return x.permute(0, 2, 3, 1)


def _padded(x, padding, kernel, stride, dilation):
    top, bottom, left, right = _explicit_pads(padding, x.shape[1:3], kernel, stride, dilation)
    return F.pad(_nchw(x), (left, right, top, bottom))


def conv2d(x, w, stride=1, padding="SAME", dilation=1):
    stride, dilation = _pair(stride), _pair(dilation)
    xp = _padded(x, padding, w.shape[:2], stride, dilation)
    return _nhwc(F.conv2d(xp, w.permute(3, 2, 0, 1), stride=stride, dilation=dilation))


def depthwise_conv2d(x, w, stride=1, padding="SAME", dilation=1):
    stride, dilation = _pair(stride), _pair(dilation)
    kh, kw, c, m = w.shape
    xp = _padded(x, padding, (kh, kw), stride, dilation)
    weight = w.permute(2, 3, 0, 1).reshape(c * m, 1, kh, kw)  # channel c*M + m, as TF
    return _nhwc(F.conv2d(xp, weight, stride=stride, dilation=dilation, groups=c))


ACTIVATIONS = {None: lambda x: x, "identity": lambda x: x, "relu": F.relu, "relu6": F.relu6,
               "hard_sigmoid": F.hardsigmoid, "hard_swish": F.hardswish}


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-3, activation=None):
    flat = x.reshape(-1, x.shape[-1])
    out = F.batch_norm(flat, running_mean, running_var, gamma, beta, training=training,
                       momentum=momentum, eps=eps)
    return ACTIVATIONS[activation](out.reshape(x.shape))


def depthwise_batch_norm(x, w, gamma, beta, stride=1, padding="SAME", dilation=1, **norm):
    return batch_norm(depthwise_conv2d(x, w, stride, padding, dilation), gamma, beta, **norm)


def avg_pool2d(x, kernel, stride=None, padding="VALID"):
    kernel = _pair(kernel)
    stride = kernel if stride is None else _pair(stride)
    xp = _padded(x, padding, kernel, stride, (1, 1))
    ones = _padded(torch.ones_like(x[:1, :, :, :1]), padding, kernel, stride, (1, 1))
    total = F.avg_pool2d(xp, kernel, stride, divisor_override=1)
    count = F.avg_pool2d(ones, kernel, stride, divisor_override=1)
    return _nhwc(total / count)


def _dims(x, axis):
    return tuple(range(x.ndim)) if axis is None else axis


TWINS = {
    "conv2d": conv2d,
    "depthwise_conv2d": depthwise_conv2d,
    "batch_norm": batch_norm,
    "depthwise_batch_norm": depthwise_batch_norm,
    "avg_pool2d": avg_pool2d,
    "global_avg_pool": lambda x: x.mean(dim=(1, 2)),
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "sub": lambda a, b: a - b,
    "div": lambda a, b: a / b,
    "pow": torch.pow,
    "neg": torch.neg,
    "relu": F.relu,
    "relu6": F.relu6,
    "matmul": torch.matmul,
    "reshape": lambda x, shape: x.reshape(shape),
    "transpose": lambda x, axes: x.permute(*axes),
    "sum": lambda x, axis=None, keepdims=False: x.sum(dim=_dims(x, axis), keepdim=keepdims),
    "mean": lambda x, axis=None, keepdims=False: x.mean(dim=_dims(x, axis), keepdim=keepdims),
    "dropout": lambda x, mask: x * mask,
    "softmax": lambda x, axis=-1: torch.softmax(x, dim=axis),
    "log_softmax": lambda x, axis=-1: torch.log_softmax(x, dim=axis),
    # labels: class indices (N,) or class probabilities (N, K), one-hot or soft; torch takes both.
    "cross_entropy": lambda logits, labels, label_smoothing=0.0: F.cross_entropy(
        logits, labels, label_smoothing=label_smoothing),
}

"""The public ops. Each takes ndarrays or Tensors and returns a Tensor.

Activations are NHWC; full-convolution weights HWIO ``(kh, kw, Cin, Cout)``; depthwise weights
``(kh, kw, C, M)`` with output channel ``c*M + m``; linear weights ``(in, out)``. ``padding`` is
``"SAME"`` (TF's rule: the odd pixel goes bottom/right), ``"VALID"``, an int (symmetric) or
``((top, bottom), (left, right))``.
"""

from __future__ import annotations

import numpy as np

from .autograd import Tensor
from .ops import apply
from .ops.registry import scalar_like


def _as_operand(value, other):
    """Python numbers take the dtype of the other operand, so scalars never promote."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        like = other.data if isinstance(other, Tensor) else np.asarray(other)
        return scalar_like(value, like if like.dtype.kind == "f" else np.float32(0))
    return value


def conv2d(x, w, stride=1, padding="SAME", dilation=1) -> Tensor:
    """Full 2-D convolution. x (N, H, W, Cin), w (kh, kw, Cin, Cout) -> (N, OH, OW, Cout)."""
    return apply("conv2d", x, w, stride=stride, padding=padding, dilation=dilation)


def depthwise_conv2d(x, w, stride=1, padding="SAME", dilation=1) -> Tensor:
    """Per-channel convolution. x (N, H, W, C), w (kh, kw, C, M) -> (N, OH, OW, C*M)."""
    return apply("depthwise_conv2d", x, w, stride=stride, padding=padding, dilation=dilation)


def separable_conv2d(x, depthwise_w, pointwise_w, stride=1, padding="SAME", dilation=1) -> Tensor:
    """Depthwise convolution then a 1x1 convolution. pointwise_w (1, 1, C*M, Cout)."""
    if np.shape(pointwise_w)[:2] != (1, 1):
        raise ValueError(f"separable_conv2d: pointwise_w must be (1, 1, C*M, Cout), got "
                         f"{np.shape(pointwise_w)}")
    return conv2d(depthwise_conv2d(x, depthwise_w, stride, padding, dilation), pointwise_w, 1, "VALID")


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-3, activation=None) -> Tensor:
    """Normalise over every axis but the last, scale by gamma, shift by beta (C,), then activate.

    ``training``: batch statistics; running arrays (plain ndarrays, if given) are updated in place
    as ``running = (1 - momentum) * running + momentum * batch`` (TF's decay = 1 - momentum),
    with the unbiased batch variance. Otherwise the running statistics are used.
    ``activation``: None, "relu" or "relu6", fused into the same pass.
    """
    return apply("batch_norm", x, gamma, beta, running_mean=running_mean, running_var=running_var,
                 training=training, momentum=momentum, eps=eps, activation=activation)


def depthwise_batch_norm(x, w, gamma, beta, stride=1, padding="SAME", dilation=1, running_mean=None,
                         running_var=None, training=True, momentum=0.1, eps=1e-3,
                         activation=None) -> Tensor:
    """``batch_norm(depthwise_conv2d(x, w, ...), gamma, beta, ...)`` as one op, equal to the two
    to the last bit, that keeps no copy of the convolution's output for backward (it is
    recomputed there): the memory of a training step's depthwise outputs, for one more
    depthwise convolution in backward."""
    return apply("depthwise_batch_norm", x, w, gamma, beta, stride=stride, padding=padding,
                 dilation=dilation, running_mean=running_mean, running_var=running_var,
                 training=training, momentum=momentum, eps=eps, activation=activation)


def relu(x) -> Tensor:
    return apply("relu", x)


def relu6(x) -> Tensor:
    """min(max(x, 0), 6)."""
    return apply("relu6", x)


def hard_sigmoid(x) -> Tensor:
    """relu6(x + 3) * (1/6): MobileNetV3's gate, as Keras writes it (torch's ``Hardsigmoid``
    divides by 6, which can differ in the last bit). A composite: its gradient is relu6's."""
    return mul(relu6(add(x, 3.0)), 1.0 / 6.0)


def hard_swish(x) -> Tensor:
    """x * hard_sigmoid(x): MobileNetV3's activation (torch's ``Hardswish``, Keras' hard_swish)."""
    return mul(x, hard_sigmoid(x))


def add(a, b) -> Tensor:
    """a + b with NumPy broadcasting."""
    return apply("add", _as_operand(a, b), _as_operand(b, a))


def sub(a, b) -> Tensor:
    """a - b with NumPy broadcasting."""
    return apply("sub", _as_operand(a, b), _as_operand(b, a))


def mul(a, b) -> Tensor:
    """a * b with NumPy broadcasting."""
    return apply("mul", _as_operand(a, b), _as_operand(b, a))


def div(a, b) -> Tensor:
    """a / b with NumPy broadcasting."""
    return apply("div", _as_operand(a, b), _as_operand(b, a))


def pow(a, b) -> Tensor:  # noqa: A001  (mirrors Python's name)
    """a ** b with NumPy broadcasting; differentiable in both (in b where a > 0)."""
    return apply("pow", _as_operand(a, b), _as_operand(b, a))


def neg(x) -> Tensor:
    """-x."""
    return apply("neg", x)


def matmul(a, b) -> Tensor:
    """a @ b for operands with at least two dimensions."""
    return apply("matmul", a, b)


def linear(x, w, b=None) -> Tensor:
    """x (N, in) @ w (in, out) + b (out,)."""
    out = matmul(x, w)
    return out if b is None else add(out, b)


def reshape(x, shape) -> Tensor:
    return apply("reshape", x, shape=tuple(shape) if not isinstance(shape, int) else (shape,))


def transpose(x, axes=None) -> Tensor:
    return apply("transpose", x, axes=axes)


def sum(x, axis=None, keepdims=False) -> Tensor:  # noqa: A001  (mirrors numpy's name)
    return apply("sum", x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False) -> Tensor:
    return apply("mean", x, axis=axis, keepdims=keepdims)


def avg_pool2d(x, kernel, stride=None, padding="VALID") -> Tensor:
    """Average over windows (stride defaults to the kernel); padding is excluded from the count."""
    return apply("avg_pool2d", x, kernel=kernel, stride=stride, padding=padding)


def global_avg_pool(x) -> Tensor:
    """(N, H, W, C) -> (N, C)."""
    return apply("global_avg_pool", x)


def dropout(x, rate, training=True, rng: np.random.Generator | None = None, keys=None) -> Tensor:
    """Zero each element with probability ``rate`` and scale the rest by 1/(1 - rate).

    Identity at inference or when ``rate`` is 0. ``rng`` makes the mask reproducible; ``keys``
    (one seed per row of ``x``, e.g. ``(seed, epoch, sample index, ...)``) instead draws row
    ``i``'s mask from ``np.random.default_rng(keys[i])`` alone, so a row's mask does not depend
    on which batch, or which process, it is in.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
    x = x if isinstance(x, Tensor) else Tensor(x)
    if not training or rate == 0.0:
        return x
    if keys is None:
        rng = np.random.default_rng() if rng is None else rng
        draws = rng.random(x.shape)
    elif len(keys) != x.shape[0]:
        raise ValueError(f"dropout: expected one key per row of x {x.shape}, got {len(keys)}")
    else:
        draws = np.array([np.random.default_rng(key).random(x.shape[1:]) for key in keys]).reshape(x.shape)
    mask = (draws >= rate).astype(x.dtype) * np.asarray(1 / (1 - rate), dtype=x.dtype)
    return apply("dropout", x, mask=mask)


def softmax(x, axis=-1) -> Tensor:
    return apply("softmax", x, axis=axis)


def log_softmax(x, axis=-1) -> Tensor:
    return apply("log_softmax", x, axis=axis)


def cross_entropy(logits, labels, label_smoothing=0.0) -> Tensor:
    """Mean cross-entropy of logits (N, K) against labels, optionally smoothed towards uniform.

    ``labels``: integer class indices (N,), or class probabilities (N, K) -- one-hot or soft
    (mixup, distillation) -- as torch's ``cross_entropy`` takes them; probabilities are cast
    to the logits' dtype and must lie in [0, 1] and sum to 1 per row.
    """
    return apply("cross_entropy", logits, labels=labels, label_smoothing=label_smoothing)


__all__ = [
    "conv2d", "depthwise_conv2d", "separable_conv2d", "batch_norm", "relu", "relu6",
    "hard_sigmoid", "hard_swish", "add", "sub", "mul", "div", "pow", "neg",
    "matmul", "linear", "reshape", "transpose", "sum", "mean", "avg_pool2d", "global_avg_pool",
    "dropout", "softmax", "log_softmax", "cross_entropy",
]

"""Softmax, log-softmax and cross-entropy, computed stably (shift by the maximum)."""

from __future__ import annotations

import numpy as np

from .registry import register


def _log_softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax_vjp(g, saved, needs):
    out, axis = saved
    return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)


@register("softmax", ("x",), softmax_vjp)
def softmax_forward(x, axis=-1):
    out = np.exp(_log_softmax(x, axis))
    return out, (out, axis)


def log_softmax_vjp(g, saved, needs):
    out, axis = saved
    return (g - np.exp(out) * g.sum(axis=axis, keepdims=True),)


@register("log_softmax", ("x",), log_softmax_vjp)
def log_softmax_forward(x, axis=-1):
    out = _log_softmax(x, axis)
    return out, (out, axis)


def check_labels(labels, logits_shape) -> np.ndarray:
    """Integer class indices (N,) in [0, K), or class probabilities (N, K) (one-hot or soft:
    finite, in [0, 1], each row summing to 1), for logits (N, K)."""
    labels = np.asarray(labels)
    if len(logits_shape) != 2:
        raise ValueError(f"cross_entropy: logits must be (N, K), got shape {logits_shape}")
    if labels.dtype.kind == "f" and labels.ndim == 2:
        return _check_probabilities(labels, logits_shape)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: labels must be integer class indices (N,) or class "
                         f"probabilities (N, K) of a float dtype, got dtype {labels.dtype} and shape "
                         f"{labels.shape}")
    if labels.shape != logits_shape[:1]:
        raise ValueError(f"cross_entropy: labels must have shape ({logits_shape[0]},) for logits "
                         f"{logits_shape}, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits_shape[1]):
        raise ValueError(f"cross_entropy: labels must lie in [0, {logits_shape[1]}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return labels


PROBABILITY_SUM_TOLERANCE = 1e-3  # float32 sums of a thousand probabilities stray ~1e-5


def _check_probabilities(labels, logits_shape) -> np.ndarray:
    if labels.shape != tuple(logits_shape):
        raise ValueError(f"cross_entropy: class probabilities must have the logits' shape "
                         f"{tuple(logits_shape)}, got {labels.shape}")
    if not np.isfinite(labels).all() or labels.min(initial=0.0) < 0 or labels.max(initial=0.0) > 1:
        raise ValueError("cross_entropy: class probabilities must be finite numbers in [0, 1]")
    sums = labels.sum(axis=1, dtype=np.float64)
    bad = np.flatnonzero(np.abs(sums - 1) > PROBABILITY_SUM_TOLERANCE)
    if bad.size:
        raise ValueError(f"cross_entropy: class probabilities must sum to 1 in each row; row "
                         f"{bad[0]} sums to {sums[bad[0]]:.6g}")
    return labels


def _target_distribution(labels, shape, smoothing, dtype):
    """The target probabilities, smoothed towards uniform as torch does: (1 - s) * p + s / K."""
    n, k = shape
    if labels.ndim == 2:
        target = labels.astype(dtype) * np.asarray(1 - smoothing, dtype=dtype)
        return target + np.asarray(smoothing / k, dtype=dtype)
    target = np.full(shape, smoothing / k, dtype=dtype)
    target[np.arange(n), labels] += np.asarray(1 - smoothing, dtype=dtype)
    return target


def cross_entropy_vjp(g, saved, needs):
    log_probs, target = saved
    count = np.asarray(log_probs.shape[0], dtype=g.dtype)
    mass = target.sum(axis=1, keepdims=True)  # 1 up to rounding
    return ((np.exp(log_probs) * mass - target) * (g / count),)


@register("cross_entropy", ("logits",), cross_entropy_vjp)
def cross_entropy_forward(logits, labels, label_smoothing=0.0):
    """Mean over the batch of -sum(target * log_softmax(logits)); the target is one-hot for
    class indices or the given probabilities (cast to the logits' dtype), smoothed towards
    uniform."""
    labels = check_labels(labels, logits.shape)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1), got {label_smoothing}")
    log_probs = _log_softmax(logits, axis=1)
    target = _target_distribution(labels, logits.shape, label_smoothing, logits.dtype)
    loss = -(target * log_probs).sum() / np.asarray(logits.shape[0], dtype=logits.dtype)
    return np.asarray(loss, dtype=logits.dtype), (log_probs, target)

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
    """Integer class indices (N,) in [0, K) for logits (N, K)."""
    labels = np.asarray(labels)
    if len(logits_shape) != 2:
        raise ValueError(f"cross_entropy: logits must be (N, K), got shape {logits_shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: labels must be integer class indices, got dtype {labels.dtype}")
    if labels.shape != logits_shape[:1]:
        raise ValueError(f"cross_entropy: labels must have shape ({logits_shape[0]},) for logits "
                         f"{logits_shape}, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits_shape[1]):
        raise ValueError(f"cross_entropy: labels must lie in [0, {logits_shape[1]}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return labels


def _target_distribution(labels, shape, smoothing, dtype):
    n, k = shape
    target = np.full(shape, smoothing / k, dtype=dtype)
    target[np.arange(n), labels] += np.asarray(1 - smoothing, dtype=dtype)
    return target


def cross_entropy_vjp(g, saved, needs):
    log_probs, target = saved
    count = np.asarray(log_probs.shape[0], dtype=g.dtype)
    return ((np.exp(log_probs) - target) * (g / count),)


@register("cross_entropy", ("logits",), cross_entropy_vjp)
def cross_entropy_forward(logits, labels, label_smoothing=0.0):
    """Mean over the batch of -sum(target * log_softmax(logits)), target smoothed towards uniform."""
    labels = check_labels(labels, logits.shape)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1), got {label_smoothing}")
    log_probs = _log_softmax(logits, axis=1)
    target = _target_distribution(labels, logits.shape, label_smoothing, logits.dtype)
    loss = -(target * log_probs).sum() / np.asarray(logits.shape[0], dtype=logits.dtype)
    return np.asarray(loss, dtype=logits.dtype), (log_probs, target)

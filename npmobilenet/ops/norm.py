"""Batch normalisation over every axis but the last (channels, NHWC), fused with its activation.

Training normalises with the batch statistics and, when running arrays are given, updates them
in place with torch's momentum convention: ``running = (1 - momentum) * running + momentum *
batch`` (TF's ``decay`` is ``1 - momentum``), the variance unbiased. Inference uses the running
statistics. ``activation`` ("relu", "relu6" or None) is applied in the same pass, and its mask
comes from the stored output, so the fused op keeps no extra tensor.

Inside :func:`synchronised` (data-parallel training with synchronised batch norm), the batch
statistics are those of the global batch spread over processes: a reducer (see
:class:`npmobilenet.distributed.SyncBatchNorm`) combines each process's count, mean and
variance in the forward pass and sums the per-channel gradient sums in the backward one, so
outputs, input gradients and moving statistics equal one process's on the whole batch. The
gamma and beta gradients stay this process's part (the gradient averaging sums them).
Outside, the reducer is None and nothing changes.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from ..kernels import batchnorm as kernels
from .registry import register

CLIP_MAX = {None: kernels.NO_ACTIVATION, "relu": np.inf, "relu6": 6.0}
_REDUCER: ContextVar = ContextVar("batch_norm_reducer", default=None)


@contextmanager
def synchronised(reducer):
    """Batch norm in training mode uses ``reducer``'s global statistics within the block."""
    token = _REDUCER.set(reducer)
    try:
        yield
    finally:
        _REDUCER.reset(token)


def check(x, gamma, beta, running_mean, running_var, training, activation, op="batch_norm",
          subject="x") -> None:
    """Raise a ValueError naming ``op`` and the bad operand; ``subject`` names what ``x`` is."""
    if activation not in CLIP_MAX:
        raise ValueError(f"{op}: activation must be one of {list(CLIP_MAX)}, got {activation!r}")
    channels = x.shape[-1] if x.ndim else 0
    for name, array in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                        ("running_var", running_var)):
        if array is None:
            if name.startswith("running") and not training:
                raise ValueError(f"{op}: {name} is required in inference mode")
            continue
        if array.shape != (channels,):
            raise ValueError(f"{op}: {name} must have shape ({channels},) for {subject} {x.shape}, "
                             f"got {array.shape}")
        if array.dtype != x.dtype:
            raise ValueError(f"{op}: {name} dtype {array.dtype} differs from {subject} dtype {x.dtype}")
    if training and _REDUCER.get() is None and x.size // max(channels, 1) < 2:
        raise ValueError(f"{op}: training needs more than one value per channel, {subject} {x.shape}")


def normalize(x2d, gamma, beta, running_mean, running_var, training, momentum, eps, activation,
              out=None):
    """The forward pass on an (M, C) array: ``(out2d, statistics)``, where ``statistics`` is
    what :func:`normalize_backward` needs besides the input. ``out`` may be ``x2d`` itself,
    when nothing needs the input afterwards. Callers check the operands first (:func:`check`)."""
    reducer = _REDUCER.get() if training else None
    dtype = x2d.dtype
    reduction = None
    if training:
        mean64, var64 = kernels.batch_statistics(x2d)
        count = x2d.shape[0]
        if reducer is not None:
            count, mean64, var64 = reducer.moments(count, mean64, var64)
            if count < 2:
                raise ValueError(f"batch_norm: training needs more than one value per channel, "
                                 f"{count} in the global batch")
            reduction = (reducer.sum, count)
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean64
            running_var[...] = (1 - momentum) * running_var + momentum * var64 * (count / (count - 1))
        mean, inv_std = mean64.astype(dtype), (1 / np.sqrt(var64 + eps)).astype(dtype)
    else:
        mean, inv_std = running_mean, 1 / np.sqrt(running_var + np.asarray(eps, dtype))
    scale = gamma * inv_std
    offset = beta - mean * scale
    clip_max = CLIP_MAX[activation]
    out2d = kernels.normalize_activate(x2d, scale, offset, clip_max,
                                       np.empty_like(x2d) if out is None else out)
    return out2d, (mean, inv_std, scale, offset, clip_max, training, reduction)


def normalize_backward(g2d, x2d, statistics, needs_input, grad_out=None):
    """Gradients (x, gamma, beta) of :func:`normalize`, all (M, C) or (C,); the input's is
    written into ``grad_out`` when given (which may be ``x2d``). The activation's mask is
    recomputed from the input, so the output is not needed."""
    mean, inv_std, scale, offset, clip_max, batch_stats, reduction = statistics
    return kernels.backward(g2d, x2d, mean, inv_std, scale, offset, clip_max, batch_stats,
                            needs_input, reduction, grad_out)


def batch_norm_vjp(g, saved, needs):
    x2d, statistics = saved
    gx, g_gamma, g_beta = normalize_backward(np.ascontiguousarray(g).reshape(x2d.shape), x2d,
                                             statistics, needs[0])
    return (None if gx is None else gx.reshape(g.shape)), g_gamma, g_beta


@register("batch_norm", ("x", "gamma", "beta"), batch_norm_vjp)
def batch_norm_forward(x, gamma, beta, running_mean=None, running_var=None, training=True,
                       momentum=0.1, eps=1e-3, activation=None):
    check(x, gamma, beta, running_mean, running_var, training, activation)
    x2d = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out2d, statistics = normalize(x2d, gamma, beta, running_mean, running_var, training, momentum,
                                  eps, activation)
    return out2d.reshape(x.shape), (x2d, statistics)

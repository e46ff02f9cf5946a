"""Batch normalisation over every axis but the last (channels, NHWC).

Training normalises with the batch statistics and, when running arrays are given, updates them
in place with torch's momentum convention: ``running = (1 - momentum) * running + momentum *
batch`` (TF's ``decay`` is ``1 - momentum``), the variance unbiased. Inference uses the running
statistics.
"""

from __future__ import annotations

import numpy as np

from .registry import register


def _check(x, gamma, beta, running_mean, running_var, training):
    channels = x.shape[-1] if x.ndim else 0
    for name, array in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                        ("running_var", running_var)):
        if array is None:
            if name.startswith("running") and not training:
                raise ValueError(f"batch_norm: {name} is required in inference mode")
            continue
        if array.shape != (channels,):
            raise ValueError(f"batch_norm: {name} must have shape ({channels},) for x {x.shape}, "
                             f"got {array.shape}")
        if array.dtype != x.dtype:
            raise ValueError(f"batch_norm: {name} dtype {array.dtype} differs from x dtype {x.dtype}")


def batch_norm_vjp(g, saved, needs):
    x_hat, inv_std, gamma, batch_stats = saved
    channels = g.shape[-1]
    g2d = g.reshape(-1, channels)
    xh2d = x_hat.reshape(-1, channels)
    g_beta = g2d.sum(axis=0)
    g_gamma = (g2d * xh2d).sum(axis=0)
    gx = None
    if needs[0]:
        if batch_stats:
            count = np.asarray(g2d.shape[0], dtype=g.dtype)
            gx = (gamma * inv_std / count) * (count * g2d - g_beta - xh2d * g_gamma)
        else:
            gx = g2d * (gamma * inv_std)
        gx = gx.reshape(g.shape)
    return gx, (g_gamma if needs[1] else None), (g_beta if needs[2] else None)


@register("batch_norm", ("x", "gamma", "beta"), batch_norm_vjp)
def batch_norm_forward(x, gamma, beta, running_mean=None, running_var=None, training=True,
                       momentum=0.1, eps=1e-3):
    _check(x, gamma, beta, running_mean, running_var, training)
    channels = x.shape[-1]
    x2d = x.reshape(-1, channels)
    if training:
        count = x2d.shape[0]
        if count < 2:
            raise ValueError(f"batch_norm: training needs more than one value per channel, x {x.shape}")
        mean = x2d.mean(axis=0)
        centered = x2d - mean
        var = np.mean(centered * centered, axis=0)
        if running_mean is not None:
            m = np.asarray(momentum, dtype=x.dtype)
            running_mean *= 1 - m
            running_mean += m * mean
            running_var *= 1 - m
            running_var += m * var * np.asarray(count / (count - 1), dtype=x.dtype)
    else:
        mean, var = running_mean, running_var
        centered = x2d - mean
    inv_std = 1 / np.sqrt(var + np.asarray(eps, dtype=x.dtype))
    x_hat = centered * inv_std
    out = (x_hat * gamma + beta).reshape(x.shape)
    return out, (x_hat.reshape(x.shape), inv_std, gamma, training)

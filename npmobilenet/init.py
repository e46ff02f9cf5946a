"""Seeded parameter initialisers for a graph, by scheme.

- ``"torchvision"``: convolution kernels kaiming-normal with fan-out (std = sqrt(2 / fan_out),
  fan_out = kh * kw * output channels), logits weights N(0, 0.01).
- ``"slim"``: every kernel, logits included, truncated normal with std 0.09 (resampled beyond 2
  std, as TF's ``truncated_normal_initializer``).

Both: batch-norm gamma 1, beta 0, moving mean 0, moving variance 1, biases 0.
"""

from __future__ import annotations

import math

import numpy as np

from .spec.graph import Graph

SLIM_STDDEV = 0.09
TORCHVISION_LINEAR_STDDEV = 0.01


def truncated_normal(rng: np.random.Generator, shape, stddev: float) -> np.ndarray:
    """Normal samples with every value beyond two standard deviations drawn again."""
    out = rng.standard_normal(shape)
    outside = np.abs(out) > 2
    while outside.any():
        out[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(out) > 2
    return out * stddev


def _torchvision_kernel(rng, op, shape):
    if op == "logits":
        return rng.normal(0.0, TORCHVISION_LINEAR_STDDEV, shape)
    fan_out = math.prod(shape) // shape[2] if op == "conv" else math.prod(shape)  # HWIO vs (kh, kw, C, M)
    return rng.normal(0.0, math.sqrt(2.0 / fan_out), shape)


def _slim_kernel(rng, op, shape):
    return truncated_normal(rng, shape, SLIM_STDDEV)


KERNEL_INITS = {"torchvision": _torchvision_kernel, "slim": _slim_kernel}
CONSTANT_INITS = {"BatchNorm/gamma": 1.0, "BatchNorm/beta": 0.0, "biases": 0.0,
                  "BatchNorm/moving_mean": 0.0, "BatchNorm/moving_variance": 1.0}


def init_parameters(graph: Graph, scheme: str, seed=None, dtype=np.float32
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return ``(params, buffers)``: ``"{node}/{name}"`` -> ndarray of ``dtype``, in graph order.

    The same ``seed`` and graph give the same values in float32 and float64 (drawn in float64,
    then cast).
    """
    if scheme not in KERNEL_INITS:
        raise ValueError(f"init: expected one of {', '.join(map(repr, KERNEL_INITS))}, got {scheme!r}")
    rng = np.random.default_rng(seed)
    kernel_init = KERNEL_INITS[scheme]
    params, buffers = {}, {}
    for node in graph.nodes:
        for key, shape in node.param_shapes.items():
            value = (kernel_init(rng, node.op, shape) if key == "weights"
                     else np.full(shape, CONSTANT_INITS[key]))
            params[f"{node.name}/{key}"] = value.astype(dtype)
        for key, shape in node.buffer_shapes.items():
            buffers[f"{node.name}/{key}"] = np.full(shape, CONSTANT_INITS[key], dtype=dtype)
    return params, buffers

"""Seeded parameter initialisers for a graph, by scheme.

- ``"torchvision"``: convolution kernels kaiming-normal with fan-out (std = sqrt(2 / fan_out),
  fan_out = kh * kw * output channels), linear weights N(0, 0.01).
- ``"slim"``: every kernel, linear ones included, truncated normal with std 0.09 (resampled
  beyond 2 std, as TF's ``truncated_normal_initializer``).

Both: batch-norm gamma 1, beta 0, moving mean 0, moving variance 1, biases 0.
"""

from __future__ import annotations

import math

import numpy as np

from .architecture.graph import Graph

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


def _torchvision(rng, param):
    if param.init == "linear":
        return rng.normal(0.0, TORCHVISION_LINEAR_STDDEV, param.shape)
    return rng.normal(0.0, math.sqrt(2.0 / param.fan_out), param.shape)  # kaiming, fan-out


def _slim(rng, param):
    return truncated_normal(rng, param.shape, SLIM_STDDEV)


RANDOM_INITS = {"torchvision": _torchvision, "slim": _slim}
CONSTANTS = {"zeros": 0.0, "ones": 1.0}


def init_parameters(graph: Graph, scheme: str, seed=None, dtype=np.float32
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return ``(params, buffers)``: ``"{node}/{name}"`` -> ndarray of ``dtype``, in graph order.

    Each node kind says how each of its arrays starts (:class:`npmobilenet.kinds.Param`):
    a constant, or a random kernel drawn by ``scheme``. The same ``seed`` and graph give the same
    values in float32 and float64 (drawn in float64, then cast).
    """
    if scheme not in RANDOM_INITS:
        raise ValueError(f"init: expected one of {', '.join(map(repr, RANDOM_INITS))}, got {scheme!r}")
    rng = np.random.default_rng(seed)
    draw = RANDOM_INITS[scheme]
    params, buffers = {}, {}
    for node in graph.nodes:
        for key, param in node.layout.params.items():
            value = (np.full(param.shape, CONSTANTS[param.init]) if param.init in CONSTANTS
                     else draw(rng, param))
            params[f"{node.name}/{key}"] = value.astype(dtype)
        for key, param in node.layout.buffers.items():
            buffers[f"{node.name}/{key}"] = np.full(param.shape, CONSTANTS[param.init], dtype=dtype)
    return params, buffers

"""``pool``: the head's average pool to one vector per image, (H, W, C) -> (C,).

``mode`` ``"global"`` averages every position; ``"slim"`` is TF-slim v1's 7x7 VALID average pool
(``kernel`` shrunk to small maps, ``stride``), which must leave a 1x1 map.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .registry import Layout, NodeKind, register_kind


def _layout(attrs: dict, input_shapes: list[tuple]) -> Layout:
    (h, w, c), = input_shapes
    return Layout((c,), macs=0)


def _forward(model, node, x):
    if node.attrs["mode"] == "global":
        return F.global_avg_pool(x)
    n, h, w, c = x.shape
    kernel = (min(h, node.attrs["kernel"][0]), min(w, node.attrs["kernel"][1]))
    pooled = F.avg_pool2d(x, kernel, node.attrs["stride"], "VALID")
    if pooled.shape[1:3] != (1, 1):
        raise ValueError(f"x: the input gives {h}x{w} features, which slim's "
                         f"{kernel[0]}x{kernel[1]} average pool reduces to "
                         f"{pooled.shape[1]}x{pooled.shape[2]}, not 1x1; build the model with "
                         f"global_pool=True")
    return F.reshape(pooled, (n, c))


class PoolStep:
    """Global pooling into a reused buffer; slim's pool (one window here) runs its forward."""

    def __init__(self, node, arrays):
        self.node = node

    def __call__(self, inputs, buffers):
        x, = inputs
        if self.node.attrs["mode"] != "global":
            return _forward(None, self.node, x).data
        return np.mean(x, axis=(1, 2), out=buffers.output(self.node.name, (x.shape[0], x.shape[3]),
                                                            x.dtype))


def _torch(node):
    import torch
    from torch import nn

    class Pool(nn.Module):
        def forward(self, x):
            return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
    return Pool()


def _onnx(node, g) -> str:
    """``GlobalAveragePool``, or slim's VALID ``AveragePool`` (its window shrunk to the map at
    the exported size, which must leave 1x1), then ``Flatten`` to (N, C)."""
    if node.attrs["mode"] == "global":
        pooled = g.op("GlobalAveragePool", [g.input(node)])
    else:
        h, w = g.in_hw(node)
        kernel = [min(h, node.attrs["kernel"][0]), min(w, node.attrs["kernel"][1])]
        stride = node.attrs["stride"]
        if ((h - kernel[0]) // stride + 1, (w - kernel[1]) // stride + 1) != (1, 1):
            raise ValueError(f"{node.name}: slim's {kernel[0]}x{kernel[1]} average pool does not "
                             f"reduce the {h}x{w} features to 1x1; export at another input size")
        pooled = g.op("AveragePool", [g.input(node)], kernel_shape=kernel, strides=[stride, stride])
    return g.op("Flatten", [pooled], axis=1)


POOL = register_kind(NodeKind("pool", _layout, _forward, PoolStep, _torch, onnx=_onnx))

"""``add``: the residual connection of a bottleneck, ``a + b`` of two same-shaped inputs."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .registry import Layout, NodeKind, register_kind


def _layout(attrs: dict, input_shapes: list[tuple]) -> Layout:
    a, b = input_shapes
    if a != b:
        raise ValueError(f"add: the inputs' shapes differ, {a} and {b}")
    return Layout(a)


def _forward(model, node, a, b):
    return F.add(a, b)


class AddStep:
    def __init__(self, node, arrays):
        self.name = node.name

    def __call__(self, inputs, buffers):
        a, b = inputs
        return np.add(a, b, out=buffers.output(self.name, a.shape, a.dtype))


def _torch(node):
    from torch import nn

    class Add(nn.Module):
        def forward(self, a, b):
            return a + b
    return Add()


def _onnx(node, g) -> str:
    return g.op("Add", [g.input(node, 0), g.input(node, 1)])


ADD = register_kind(NodeKind("add", _layout, _forward, AddStep, _torch, onnx=_onnx))

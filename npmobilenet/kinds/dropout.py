"""``dropout``: zero each feature with probability ``rate`` while training; identity otherwise."""

from __future__ import annotations

from .. import functional as F
from .registry import Layout, NodeKind, register_kind


def _layout(attrs: dict, input_shapes: list[tuple]) -> Layout:
    shape, = input_shapes
    return Layout(shape)


def _forward(model, node, x):
    return F.dropout(x, node.attrs["rate"], training=model.training, rng=model.dropout_rng,
                     keys=model.dropout_keys(node))


class DropoutStep:
    def __init__(self, node, arrays):
        pass

    def __call__(self, inputs, buffers):
        return inputs[0]


def _torch(node):
    from torch import nn

    return nn.Dropout(node.attrs["rate"])


def _onnx(node, g) -> str:
    """Inference: the identity, no operator."""
    return g.input(node)


DROPOUT = register_kind(NodeKind("dropout", _layout, _forward, DropoutStep, _torch, onnx=_onnx))

"""``linear``: features (C,) -> (out,), with optional bias, batch norm and activation.

The classifier (``Logits``) is one, and so are the hidden layers of MobileNetV3's and V4's heads
(torchvision's Linear + Hardswish, Keras' 1x1 conv with bias on the pooled map, timm's 1x1
conv_head + BatchNorm + ReLU: on a 1x1 map all the same map). Attributes: ``in_features``,
``out_features``, ``bias`` (bool), ``batch_norm`` ({eps, momentum} or None), ``activation``.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..activations import activation
from ..kernels.epilogue import bias_activate
from . import layouts
from .conv import BATCH_NORM, batch_norm_activation
from .registry import Layout, NodeKind, Param, register_kind


def _layout(attrs: dict, input_shapes: list[tuple]) -> Layout:
    (c,), = input_shapes
    k = attrs["out_features"]
    params = {"weights": Param((c, k), "linear")}
    buffers = {}
    if attrs["bias"]:
        params["biases"] = Param((k,), "zeros")
    if attrs["batch_norm"]:
        params.update({"BatchNorm/gamma": Param((k,), "ones"), "BatchNorm/beta": Param((k,), "zeros")})
        buffers = {"BatchNorm/moving_mean": Param((k,), "zeros"),
                   "BatchNorm/moving_variance": Param((k,), "ones")}
    return Layout((k,), params, buffers, weights=c * k, macs=c * k)


def _forward(model, node, x):
    y = F.matmul(x, model.param(node, "weights"))
    if node.attrs["bias"]:
        y = F.add(y, model.param(node, "biases"))
    if node.attrs["batch_norm"]:
        return batch_norm_activation(model, node, y)
    return activation(node.attrs["activation"]).apply(y)


def fold(node, param) -> tuple[np.ndarray, np.ndarray]:
    """The node's weights and bias with its eval-mode batch norm folded in; ``param(key)`` gives
    the node's arrays."""
    weights = param("weights")
    bias = param("biases") if node.attrs["bias"] else np.zeros_like(weights[0])
    if node.attrs["batch_norm"]:
        gamma, beta, mean, variance = (param(key) for key in BATCH_NORM)
        eps = np.asarray(node.attrs["batch_norm"]["eps"], weights.dtype)
        scale = gamma * (1 / np.sqrt(variance + eps))
        weights, bias = weights * scale, (bias - mean) * scale + beta
    return np.ascontiguousarray(weights), np.ascontiguousarray(bias)


class LinearStep:
    """x @ W' + b' with the batch norm folded in, the activation in the epilogue."""

    def __init__(self, node, arrays):
        self.name = node.name
        self.weights, self.bias = fold(node, lambda key: arrays[f"{node.name}/{key}"])
        self.activation = activation(node.attrs["activation"])

    def __call__(self, inputs, buffers):
        x, = inputs
        out = buffers.output(self.name, (x.shape[0], self.weights.shape[1]), x.dtype)
        np.matmul(x, self.weights, out=out)
        return bias_activate(out, self.bias, self.activation.epilogue)


def _torch(node):
    from torch import nn

    a = node.attrs
    layers = [nn.Linear(a["in_features"], a["out_features"], bias=a["bias"])]
    if a["batch_norm"]:
        layers.append(nn.BatchNorm1d(a["out_features"], eps=a["batch_norm"]["eps"]))
    torch_activation = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hard_swish": nn.Hardswish}.get(a["activation"])
    if torch_activation is not None:
        layers.append(torch_activation())
    return nn.Sequential(*layers)


def _onnx(node, g) -> str:
    """ONNX ``Gemm`` over (N, in) features, batch norm folded, then the activation."""
    weights, bias = fold(node, lambda key: g.param(node, key))
    y = g.op("Gemm", [g.input(node), g.constant(node, "weights", weights), g.constant(node, "bias", bias)])
    return g.activation(node.attrs["activation"], y)


SOURCES = {
    "torch": {"weights": ("{fc}.weight", layouts.TORCH_LINEAR), "biases": ("{fc}.bias", layouts.SAME),
              "BatchNorm/gamma": ("{bn}.weight", layouts.SAME), "BatchNorm/beta": ("{bn}.bias", layouts.SAME),
              "BatchNorm/moving_mean": ("{bn}.running_mean", layouts.SAME),
              "BatchNorm/moving_variance": ("{bn}.running_var", layouts.SAME)},
    "keras": {"weights": ("{fc}/kernel", layouts.KERAS_LINEAR), "biases": ("{fc}/bias", layouts.SAME),
              "BatchNorm/gamma": ("{bn}/gamma", layouts.SAME), "BatchNorm/beta": ("{bn}/beta", layouts.SAME),
              "BatchNorm/moving_mean": ("{bn}/moving_mean", layouts.SAME),
              "BatchNorm/moving_variance": ("{bn}/moving_variance", layouts.SAME)},
    # TF-slim: a 1x1 conv (1, 1, in, out) with biases, as Keras's
    "slim": {"weights": ("{scope}/weights", layouts.KERAS_LINEAR), "biases": ("{scope}/biases", layouts.SAME),
             **{key: (f"{{scope}}/{key}", layouts.SAME) for key in BATCH_NORM}},
}

LINEAR = register_kind(NodeKind("linear", _layout, _forward, LinearStep, _torch, SOURCES, _onnx))

"""``squeeze_excite``: channel attention (Hu et al. 2018) as MobileNetV3 places it, after the
depthwise convolution of a bottleneck.

The map's per-channel mean (squeeze) runs through a 1x1 reduction to ``squeeze`` channels with
bias and ReLU (``Conv``), a 1x1 expansion back with bias (``Conv_1``) and a ``gate`` activation
(hard_sigmoid in MobileNetV3); the input is multiplied by the gate channel by channel. The 1x1
convolutions act on a 1x1 map, so they are stored as linear ``(in, out)`` weights. Attributes:
``channels``, ``squeeze``, ``activation`` (inside, default relu), ``gate``.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..activations import activation
from ..kernels.epilogue import bias_activate
from . import layouts
from .registry import Layout, NodeKind, Param, register_kind


def _layout(attrs: dict, input_shapes: list[tuple]) -> Layout:
    (h, w, c), = input_shapes
    s = attrs["squeeze"]
    return Layout((h, w, c),
                  params={"Conv/weights": Param((c, s), "conv", fan_out=s),
                          "Conv/biases": Param((s,), "zeros"),
                          "Conv_1/weights": Param((s, c), "conv", fan_out=c),
                          "Conv_1/biases": Param((c,), "zeros")},
                  weights=2 * c * s, macs=2 * c * s + 2 * h * w * c)


def _forward(model, node, x):
    p = lambda key: model.param(node, key)  # noqa: E731
    squeezed = F.mean(x, axis=(1, 2))
    hidden = activation(node.attrs["activation"]).apply(F.linear(squeezed, p("Conv/weights"), p("Conv/biases")))
    gate = activation(node.attrs["gate"]).apply(F.linear(hidden, p("Conv_1/weights"), p("Conv_1/biases")))
    return F.mul(x, F.reshape(gate, (x.shape[0], 1, 1, x.shape[3])))


class SqueezeExciteStep:
    def __init__(self, node, arrays):
        self.name = node.name
        self.arrays = [arrays[f"{node.name}/{key}"] for key in
                       ("Conv/weights", "Conv/biases", "Conv_1/weights", "Conv_1/biases")]
        self.inner, self.gate = activation(node.attrs["activation"]), activation(node.attrs["gate"])

    def __call__(self, inputs, buffers):
        x, = inputs
        reduce_w, reduce_b, expand_w, expand_b = self.arrays
        hidden = bias_activate(x.mean(axis=(1, 2)) @ reduce_w, reduce_b, self.inner.epilogue)
        gate = bias_activate(hidden @ expand_w, expand_b, self.gate.epilogue)
        out = buffers.output(self.name, x.shape, x.dtype)
        return np.multiply(x, gate[:, None, None, :], out=out)


def _torch(node):
    import torch
    from torch import nn

    a = node.attrs
    gates = {"hard_sigmoid": nn.Hardsigmoid, "sigmoid": nn.Sigmoid}

    class SqueezeExcite(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Conv2d(a["channels"], a["squeeze"], 1)
            self.fc2 = nn.Conv2d(a["squeeze"], a["channels"], 1)
            self.inner, self.gate = nn.ReLU(), gates[a["gate"]]()

        def forward(self, x):
            scale = self.gate(self.fc2(self.inner(self.fc1(torch.mean(x, (2, 3), keepdim=True)))))
            return x * scale
    return SqueezeExcite()


def _onnx(node, g) -> str:
    """``ReduceMean`` over H, W (kept), two 1x1 ``Conv`` with biases and their activations,
    ``Mul`` by the gate."""
    x = g.input(node)
    hidden = g.op("ReduceMean", [x], axes=[2, 3], keepdims=1)
    for layer, act in (("Conv", node.attrs["activation"]), ("Conv_1", node.attrs["gate"])):
        weights = g.param(node, f"{layer}/weights")  # (in, out) -> (out, in, 1, 1)
        hidden = g.op("Conv", [hidden, g.constant(node, f"{layer}/weights", weights.T[:, :, None, None]),
                               g.constant(node, f"{layer}/biases", g.param(node, f"{layer}/biases"))],
                      kernel_shape=[1, 1])
        hidden = g.activation(act, hidden)
    return g.op("Mul", [x, hidden])


SOURCES = {
    "torch": {"Conv/weights": ("{reduce}.weight", layouts.TORCH_LINEAR),
              "Conv/biases": ("{reduce}.bias", layouts.SAME),
              "Conv_1/weights": ("{expand}.weight", layouts.TORCH_LINEAR),
              "Conv_1/biases": ("{expand}.bias", layouts.SAME)},
    "keras": {"Conv/weights": ("{reduce}/kernel", layouts.KERAS_LINEAR),
              "Conv/biases": ("{reduce}/bias", layouts.SAME),
              "Conv_1/weights": ("{expand}/kernel", layouts.KERAS_LINEAR),
              "Conv_1/biases": ("{expand}/bias", layouts.SAME)},
}

SQUEEZE_EXCITE = register_kind(NodeKind("squeeze_excite", _layout, _forward, SqueezeExciteStep,
                                        _torch, SOURCES, _onnx))

"""``conv`` and ``depthwise``: a convolution, its batch norm and its activation, as one node.

This is TF-slim's unit (``slim.conv2d`` / ``slim.separable_conv2d`` with ``normalizer_fn``).
Attributes: ``kernel`` [kh, kw], ``stride``, ``dilation``, ``padding`` (as the geometry module
accepts it), ``in_channels``, ``out_channels`` (a depthwise node keeps its channels),
``activation`` (a name from :mod:`npmobilenet.activations`) and ``batch_norm`` {eps, momentum}.

Training runs ``conv2d`` then ``batch_norm``, or ``depthwise_batch_norm`` (the two as one op
that recomputes the convolution in backward rather than keep its output), with a clamp-type
activation fused in (others follow as their own ops). Inference folds the batch norm into the
weights, ``W' = W * gamma / sqrt(var + eps)`` and ``b' = beta - mean * gamma / sqrt(var + eps)``,
and runs the same convolution code into a reused buffer with bias and activation (any of them)
in its epilogue.
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..activations import activation
from ..kernels import depthwise as dw
from ..kernels.epilogue import bias_activate
from ..ops.conv import conv2d_compute, node_geometry
from . import layouts
from .registry import Layout, NodeKind, Param, register_kind

BATCH_NORM = ("BatchNorm/gamma", "BatchNorm/beta", "BatchNorm/moving_mean",
              "BatchNorm/moving_variance")


def _layout(attrs: dict, input_shapes: list[tuple], depthwise: bool) -> Layout:
    (h, w, c), = input_shapes
    kernel = tuple(attrs["kernel"])
    cout = c if depthwise else attrs["out_channels"]
    weight_shape = (*kernel, c, 1) if depthwise else (*kernel, c, cout)
    geometry = node_geometry(attrs, (h, w))
    weights = math.prod(weight_shape)
    fan_out = math.prod(weight_shape) if depthwise else kernel[0] * kernel[1] * cout
    channel = (cout,)
    return Layout(
        (*geometry.out_hw, cout),
        params={"weights": Param(weight_shape, "conv", fan_out),
                "BatchNorm/gamma": Param(channel, "ones"), "BatchNorm/beta": Param(channel, "zeros")},
        buffers={"BatchNorm/moving_mean": Param(channel, "zeros"),
                 "BatchNorm/moving_variance": Param(channel, "ones")},
        weights=weights, macs=geometry.out_hw[0] * geometry.out_hw[1] * weights)


def _batch_norm_arguments(model, node) -> tuple[list, dict, object]:
    """The batch norm's arrays and options (batch statistics while training, unless frozen),
    and the node's activation (fused into the batch norm when it is a clamp)."""
    bn, act = node.attrs["batch_norm"], activation(node.attrs["activation"])
    arrays = [*(model.param(node, key) for key in BATCH_NORM[:2]),
              *(model.buffer(node, key) for key in BATCH_NORM[2:])]
    options = {"training": model.training and node.name not in model.frozen,
               "momentum": bn["momentum"], "eps": bn["eps"],
               "activation": act.name if act.fusable else None}
    return arrays, options, act


def batch_norm_activation(model, node, y):
    """The node's batch norm and activation on ``y``."""
    (gamma, beta, mean, variance), options, act = _batch_norm_arguments(model, node)
    y = F.batch_norm(y, gamma, beta, mean, variance, **options)
    return y if act.fusable else act.apply(y)


def _forward(model, node, x):
    a = node.attrs
    weights = model.param(node, "weights")
    if node.op == "conv":
        y = F.conv2d(x, weights, a["stride"], a["padding"], a["dilation"])
        return batch_norm_activation(model, node, y)
    # One op, which recomputes the convolution in backward instead of keeping its output.
    (gamma, beta, mean, variance), options, act = _batch_norm_arguments(model, node)
    y = F.depthwise_batch_norm(x, weights, gamma, beta, a["stride"], a["padding"], a["dilation"],
                               mean, variance, **options)
    return y if act.fusable else act.apply(y)


def fold_batch_norm(node, weights, gamma, beta, mean, variance) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode batch norm folded into ``weights`` (scaled per output channel) and a bias;
    every array stays in its dtype."""
    eps = np.asarray(node.attrs["batch_norm"]["eps"], weights.dtype)
    scale = gamma * (1 / np.sqrt(variance + eps))  # the same rounding as the batch_norm op
    kh, kw, cin, last = weights.shape
    if node.op == "depthwise":  # output channel c*M + m
        folded = (weights.reshape(kh, kw, cin * last) * scale).reshape(weights.shape)
    else:
        folded = weights * scale
    return np.ascontiguousarray(folded), np.ascontiguousarray(beta - mean * scale)


class ConvStep:
    """The inference step of a conv/depthwise node: folded weights, geometry per input size.

    Its readable counterpart is the node's ``forward`` in eval mode (convolution, batch norm
    with the moving statistics, activation: three ops); under ``use_reference_kernels()`` the
    kernels it calls (depthwise with epilogue, im2col, bias + activation) run their references.
    """

    def __init__(self, node, arrays):
        self.node = node
        self.weights, self.bias = fold_batch_norm(
            node, *(arrays[f"{node.name}/{key}"] for key in ("weights", *BATCH_NORM)))
        self.activation = activation(node.attrs["activation"])
        self._geometry = {}

    def __call__(self, inputs, buffers):
        x, = inputs
        geometry = self._geometry.get(x.shape[1:3])
        if geometry is None:
            geometry = self._geometry[x.shape[1:3]] = node_geometry(self.node.attrs, x.shape[1:3])
        n, (oh, ow), cout = x.shape[0], geometry.out_hw, self.bias.shape[0]
        out = buffers.output(self.node.name, (n, oh, ow, cout), x.dtype)
        if self.node.op == "depthwise":
            dw.depthwise_forward(x, self.weights, geometry.stride, geometry.dilation, geometry.pads,
                                 bias=self.bias, epilogue=self.activation.epilogue, out=out)
        else:
            columns = None
            if not geometry.is_gemm_view:
                kh, kw = self.weights.shape[:2]
                columns = buffers.scratch(self.node.name, (n, oh, ow, kh, kw, x.shape[3]), x.dtype)
            conv2d_compute(x, self.weights, geometry, out=out, columns=columns)
            bias_activate(out.reshape(-1, cout), self.bias, self.activation.epilogue)
        return out


def _torch(node):
    from torch import nn

    a = node.attrs
    kernel, dilation = a["kernel"], a["dilation"]
    groups = a["in_channels"] if node.op == "depthwise" else 1
    layers = [nn.Conv2d(a["in_channels"], a["out_channels"], kernel, a["stride"],
                        padding=[k // 2 * dilation for k in kernel], dilation=dilation, groups=groups,
                        bias=False),
              nn.BatchNorm2d(a["out_channels"], eps=a["batch_norm"]["eps"])]
    torch_activation = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hard_swish": nn.Hardswish,
                        "hard_sigmoid": nn.Hardsigmoid}.get(a["activation"])
    if torch_activation is not None:
        layers.append(torch_activation())
    return nn.Sequential(*layers)


def _onnx(node, g) -> str:
    """ONNX ``Conv`` (OIHW weights, ``group`` = channels for depthwise) with the batch norm
    folded into weights and bias, then the activation."""
    weights, bias = fold_batch_norm(node, *(g.param(node, key) for key in ("weights", *BATCH_NORM)))
    geometry = node_geometry(node.attrs, g.in_hw(node))
    depthwise = node.op == "depthwise"
    kernel = weights.transpose(2, 3, 0, 1) if depthwise else weights.transpose(3, 2, 0, 1)
    top, bottom, left, right = geometry.pads
    y = g.op("Conv", [g.input(node), g.constant(node, "weights", kernel), g.constant(node, "bias", bias)],
             kernel_shape=list(geometry.kernel), strides=list(geometry.stride),
             dilations=list(geometry.dilation), pads=[top, left, bottom, right],
             group=weights.shape[2] if depthwise else 1)
    return g.activation(node.attrs["activation"], y)


def _sources(weight_layout, slim_weights: str) -> dict:
    return {
        "torch": {"weights": ("{conv}.weight", weight_layout),
                  "BatchNorm/gamma": ("{bn}.weight", layouts.SAME),
                  "BatchNorm/beta": ("{bn}.bias", layouts.SAME),
                  "BatchNorm/moving_mean": ("{bn}.running_mean", layouts.SAME),
                  "BatchNorm/moving_variance": ("{bn}.running_var", layouts.SAME)},
        "keras": {"weights": ("{conv}/kernel", layouts.SAME),
                  "BatchNorm/gamma": ("{bn}/gamma", layouts.SAME),
                  "BatchNorm/beta": ("{bn}/beta", layouts.SAME),
                  "BatchNorm/moving_mean": ("{bn}/moving_mean", layouts.SAME),
                  "BatchNorm/moving_variance": ("{bn}/moving_variance", layouts.SAME)},
        "slim": {"weights": (f"{{scope}}/{slim_weights}", layouts.SAME),
                 **{key: (f"{{scope}}/{key}", layouts.SAME) for key in BATCH_NORM}},
    }


CONV = register_kind(NodeKind(
    "conv", lambda attrs, shapes: _layout(attrs, shapes, depthwise=False), _forward, ConvStep,
    _torch, _sources(layouts.TORCH_CONV, "weights"), _onnx))
DEPTHWISE = register_kind(NodeKind(
    "depthwise", lambda attrs, shapes: _layout(attrs, shapes, depthwise=True), _forward, ConvStep,
    _torch, _sources(layouts.TORCH_DEPTHWISE, "depthwise_weights"), _onnx))

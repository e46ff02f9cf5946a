"""The inference fast path: a graph compiled for evaluation, batch norm folded into the weights.

In eval mode a convolution followed by batch norm is one affine map, so each conv/depthwise
node's weights are scaled per output channel, ``W' = W * gamma / sqrt(var + eps)``, and its
batch norm becomes a bias, ``b' = beta - mean * gamma / sqrt(var + eps)``. A node then runs as:

- 1x1 conv: one GEMM on the NHWC view, written into the node's buffer (``np.matmul(out=)``),
  then bias + activation in place (one fused pass);
- other full convs (the stem): im2col into a reused column buffer (borders read zero; no padded
  copy of the input), then the same GEMM + epilogue;
- depthwise: the Numba kernel with the bias + clamp epilogue fused, into the node's buffer;
- residual add: in place into its own buffer.

Other nodes (pool, dropout, logits) run through the model's ordinary functions.

Buffers are kept per input shape and reused by the next call, unless the caller still holds
one (an end point, the output): a held buffer is left alone and a new one is allocated, so
arrays returned earlier never change. The folded weights are a snapshot: the model drops its
plan whenever its parameters may change (load_state_dict, train/eval, a forward recorded for
backward); after editing parameter arrays in place by hand, call ``model.eval()`` again.
The buffers hold every node's activation (they are the end points) for up to four input
shapes; ``model.train()`` releases them. Like ``end_points``, a plan serves one call at a time.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .kernels import batchnorm as bn_kernels
from .kernels import depthwise as dw
from .kernels.geometry import conv_output_hw, pair, resolve_padding
from .kernels.im2col import im2col
from .spec.graph import INPUT

CLIP_MAX = {None: None, "relu": np.inf, "relu6": 6.0}
_MAX_SHAPES = 4  # input shapes whose buffers are kept at once


@dataclass
class _Folded:
    """A conv/depthwise node with its batch norm folded in."""

    weights: np.ndarray  # conv (kh*kw*Cin, Cout) C-contiguous; depthwise (kh, kw, C, M)
    bias: np.ndarray  # (Cout,)
    clip_max: float | None


def fold_batch_norm(node, weights: np.ndarray, gamma, beta, mean, variance) -> _Folded:
    """Fold eval-mode batch norm into ``node``'s weights; every array stays in its dtype."""
    eps = np.asarray(node.attrs["batch_norm"]["eps"], weights.dtype)
    scale = gamma * (1 / np.sqrt(variance + eps))  # the same rounding as the batch_norm op
    bias = beta - mean * scale
    kh, kw, cin, last = weights.shape
    if node.op == "depthwise":  # output channel c*M + m
        folded = (weights.reshape(kh, kw, cin * last) * scale).reshape(weights.shape)
    else:
        folded = (weights * scale).reshape(kh * kw * cin, last)
    return _Folded(np.ascontiguousarray(folded), np.ascontiguousarray(bias),
                   CLIP_MAX[node.attrs["activation"]])


class InferencePlan:
    """A model's graph ready to run in eval mode without recording anything.

    Parameters
    ----------
    graph : Graph
    arrays : mapping ``"{node}/{param}"`` -> ndarray, parameters and buffers of one dtype.
    fallback : callable(node, *inputs) -> ndarray
        Runs the nodes the plan does not compile (pool, dropout, logits).
    """

    def __init__(self, graph, arrays, fallback: Callable):
        self.graph = graph
        self.fallback = fallback
        self.folded = {
            node.name: fold_batch_norm(node, *(arrays[f"{node.name}/{key}"] for key in (
                "weights", "BatchNorm/gamma", "BatchNorm/beta", "BatchNorm/moving_mean",
                "BatchNorm/moving_variance")))
            for node in graph.nodes if node.op in ("conv", "depthwise")}
        self._shapes: OrderedDict[tuple, dict] = OrderedDict()
        self.calls = 0  # how many forwards ran through the plan (tests check it is taken)

    def __call__(self, x: np.ndarray, start: str = INPUT) -> dict[str, np.ndarray]:
        """Run the nodes after ``start`` on its activation ``x``; returns node name -> output."""
        self.calls += 1
        geometry = self._geometry(start, x.shape, x.dtype)
        values = {start: x}
        for node in self._nodes_after(start):
            inputs = [values[i] for i in node.inputs]
            step = geometry.get(node.name)
            values[node.name] = self._run(node, step, inputs) if step else self.fallback(node, *inputs)
        values.pop(start)
        return values

    def _nodes_after(self, start):
        nodes = self.graph.nodes
        if start == INPUT:
            return nodes
        index = [node.name for node in nodes].index(start)
        return nodes[index + 1:]

    def _geometry(self, start, shape, dtype) -> dict:
        key = (start, shape, dtype.str)
        steps = self._shapes.get(key)
        if steps is None:
            steps = self._shapes[key] = _plan_steps(self._nodes_after(start), start, shape)
            if len(self._shapes) > _MAX_SHAPES:
                self._shapes.popitem(last=False)
        else:
            self._shapes.move_to_end(key)
        return steps

    def _run(self, node, step: "_Step", inputs):
        out = step.buffer(inputs[0].dtype)
        if node.op == "add":
            return np.add(inputs[0], inputs[1], out=out)
        folded = self.folded[node.name]
        x = inputs[0]
        if node.op == "depthwise":
            return dw.depthwise_forward(x, folded.weights, step.stride, step.dilation, step.pads,
                                        bias=folded.bias, clip_max=folded.clip_max, out=out)
        n, oh, ow, cout = out.shape
        if step.pointwise:
            columns = x.reshape(n * oh * ow, x.shape[3])
        else:
            columns = im2col(x, step.kernel, step.stride, step.dilation, step.pads, (oh, ow),
                             out=step.columns(x.dtype)).reshape(n * oh * ow, -1)
        out2d = out.reshape(n * oh * ow, cout)
        np.matmul(columns, folded.weights, out=out2d)
        bn_kernels.bias_activate(out2d, folded.bias, _clip_code(folded.clip_max))
        return out


def _clip_code(clip_max):
    return bn_kernels.NO_ACTIVATION if clip_max is None else clip_max


class _Step:
    """Geometry and reusable buffers of one compiled node for one input shape."""

    def __init__(self, out_shape, kernel=(1, 1), stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
                 columns_shape=None):
        self.out_shape, self.kernel, self.stride, self.dilation, self.pads = (
            out_shape, kernel, stride, dilation, pads)
        self.pointwise = kernel == (1, 1) and stride == (1, 1) and not any(pads)
        self.columns_shape = columns_shape
        self._out = self._columns = None

    def buffer(self, dtype) -> np.ndarray:
        """The output buffer, or a new one while a caller still holds the previous output."""
        self._out = _reusable(self._out, self.out_shape, dtype, np.empty)
        return self._out

    def columns(self, dtype) -> np.ndarray:
        """The im2col buffer; zero where the window reads padding (im2col leaves those alone)."""
        self._columns = _reusable(self._columns, self.columns_shape, dtype, np.zeros)
        return self._columns


def _reusable(buffer, shape, dtype, allocate):
    # References: the attribute and getrefcount's argument; any more is someone else's.
    if buffer is None or buffer.dtype != dtype or sys.getrefcount(buffer) > 3:
        return allocate(shape, dtype)
    return buffer


def _plan_steps(nodes, start, shape) -> dict:
    """Per compiled node, its resolved geometry for an input of ``shape`` at ``start``."""
    shapes = {start: shape}
    steps = {}
    for node in nodes:
        a = node.attrs
        in_shape = shapes[node.inputs[0]]
        if in_shape is None:  # after a node the plan does not compile
            shapes[node.name] = None
        elif node.op in ("conv", "depthwise"):
            n, h, w, c = in_shape
            kernel, stride, dilation = pair(tuple(a["kernel"]), "kernel"), pair(a["stride"], "stride"), \
                pair(a["dilation"], "dilation")
            padding = a["padding"]
            if isinstance(padding, list):
                padding = tuple(tuple(p) for p in padding)
            pads = resolve_padding(padding, (h, w), kernel, stride, dilation)
            oh, ow = conv_output_hw((h, w), kernel, stride, dilation, pads, what=f"{node.name} input")
            cout = a["out_channels"]
            columns_shape = (n, oh, ow, *kernel, c) if node.op == "conv" else None
            steps[node.name] = _Step((n, oh, ow, cout), kernel, stride, dilation, pads, columns_shape)
            shapes[node.name] = (n, oh, ow, cout)
        elif node.op == "add":
            steps[node.name] = _Step(in_shape)
            shapes[node.name] = in_shape
        else:
            shapes[node.name] = None  # run by the fallback: its output shape is not tracked
    return steps


__all__ = ["InferencePlan", "fold_batch_norm"]

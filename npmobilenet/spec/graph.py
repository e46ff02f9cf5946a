"""Expand a validated spec and its options into an ordered graph of named nodes.

Nodes are coarse, at the TF-slim endpoint level. Each has an op (``conv``: convolution + batch
norm + optional activation; ``depthwise``: the same with a per-channel kernel; ``add``: a v2
residual; ``pool``; ``dropout``; ``logits``: linear with bias), attrs, input node names (the
image is ``"input"``), its per-image output shape, and its counts: ``weights`` (kernel entries,
what TF-slim's tables call params), ``params`` (all trainable entries: kernel, batch-norm gamma
and beta, biases) and ``macs``. Everything is computed from shapes alone, without data.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..kernels.geometry import conv_output_hw, resolve_padding
from .options import Options

INPUT = "input"
INPUT_CHANNELS = 3
# TF-slim's head scopes for v1; v2's equivalents.
HEAD_NAMES = {"v1": ("AvgPool_1a", "Dropout_1b"), "v2": ("AvgPool", "Dropout")}
SLIM_POOL_KERNEL = 7
SLIM_POOL_STRIDE = 2  # slim.avg_pool2d's default stride
# Keras's MobileNet (v1) zero-pads ((0, 1), (0, 1)) before each stride-2 depthwise convolution and
# runs it VALID: equal to SAME on even sizes only. (Keras's v2 pads equal SAME everywhere.)
KERAS_STRIDE2_DEPTHWISE_PADS = [[0, 1], [0, 1]]


@dataclass
class Node:
    """One graph node; ``param_shapes``/``buffer_shapes`` are keyed by the name after ``node/``."""

    name: str
    op: str
    attrs: dict
    inputs: tuple[str, ...]
    out_shape: tuple[int, ...]
    weights: int = 0
    params: int = 0
    macs: int = 0
    param_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    buffer_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "attrs": self.attrs, "inputs": list(self.inputs),
                "out_shape": list(self.out_shape), "weights": self.weights, "params": self.params,
                "macs": self.macs,
                "parameters": {k: list(v) for k, v in self.param_shapes.items()},
                "buffers": {k: list(v) for k, v in self.buffer_shapes.items()}}


@dataclass
class Graph:
    """The expanded network: ``nodes`` in execution order, the last one being the output."""

    name: str
    family: str
    options: Options
    input_shape: tuple[int, int, int]  # (H, W, C) per image
    min_input_size: tuple[int, int]  # the body's total stride: smaller inputs are refused
    nodes: list[Node]

    @property
    def output(self) -> str:
        return self.nodes[-1].name

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"node {name!r} is not in the graph")

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Trainable parameters ``"{node}/{param}"`` -> shape, in graph order."""
        return {f"{n.name}/{key}": shape for n in self.nodes for key, shape in n.param_shapes.items()}

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Batch-norm moving statistics ``"{node}/{buffer}"`` -> shape, in graph order."""
        return {f"{n.name}/{key}": shape for n in self.nodes for key, shape in n.buffer_shapes.items()}

    def totals(self) -> dict[str, int]:
        return {key: sum(getattr(n, key) for n in self.nodes) for key in ("weights", "params", "macs")}

    def to_dict(self) -> dict:
        """A JSON-serialisable description of the whole graph."""
        return {"name": self.name, "family": self.family, "options": self.options.to_dict(),
                "input_shape": list(self.input_shape), "min_input_size": list(self.min_input_size),
                "nodes": [node.to_dict() for node in self.nodes], "total": self.totals()}

    def summary_dict(self) -> dict:
        """Per-layer rows and totals, as printed by ``npmobilenet summary --json``."""
        layers = [{"name": n.name, "op": n.op, "output_shape": list(n.out_shape),
                   "weights": n.weights, "params": n.params, "macs": n.macs} for n in self.nodes]
        return {"layers": layers, "total": self.totals()}

    def summary(self) -> str:
        """A per-layer table like TF-slim's docstring tables, with totals."""
        header = ("Layer", "op", "output shape", "weights", "params", "MACs")
        rows = [(n.name, n.op, "x".join(map(str, n.out_shape)), f"{n.weights:,}", f"{n.params:,}",
                 f"{n.macs:,}") for n in self.nodes]
        total = self.totals()
        footer = ("Total", "", "", f"{total['weights']:,}", f"{total['params']:,}",
                  f"{total['macs']:,}")
        widths = [max(len(row[i]) for row in (header, *rows, footer)) for i in range(6)]

        def line(row):
            left = [row[i].ljust(widths[i]) for i in range(3)]
            right = [row[i].rjust(widths[i]) for i in range(3, 6)]
            return "  ".join(left + right).rstrip()

        rule = "-" * len(line(header))
        return "\n".join([line(header), rule, *map(line, rows), rule, line(footer)])

    def to_dot(self) -> str:
        """Graphviz DOT text: one box per node (name, op, output shape), edges from inputs.

        Names come from specs, which come from strangers: every one is quoted with
        :func:`dot_string`, so a quote or newline in a name cannot add DOT syntax.
        """
        q = dot_string

        def box(name: str, *label: str) -> str:
            return f"  {q(name)} [label={q(chr(10).join(label))}];"

        lines = [f"digraph {q(self.name)} {{", "  rankdir=TB;", "  node [shape=box, fontsize=10];",
                 box(INPUT, "input", "x".join(map(str, self.input_shape)))]
        for n in self.nodes:
            lines.append(box(n.name, n.name, f"{n.op} {'x'.join(map(str, n.out_shape))}"))
            lines.extend(f"  {q(source)} -> {q(n.name)};" for source in n.inputs)
        lines.append("}")
        return "\n".join(lines) + "\n"


def dot_string(text: str) -> str:
    """``text`` as a DOT double-quoted string: backslashes and quotes escaped, line breaks as
    DOT's ``\\n`` escape, other control characters dropped."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + "".join(c for c in escaped if c.isprintable()) + '"'


def make_divisible(value: float, divisor: int, min_value: int) -> int:
    """Round to the nearest multiple of ``divisor`` (at least ``min_value``), never below 90%."""
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class _Builder:
    """Appends nodes while tracking the current tensor, its shape and the running stride."""

    def __init__(self, family: str, options: Options):
        self.family = family
        self.options = options
        self.current = INPUT
        self.shape = (*options.input_size, INPUT_CHANNELS)
        self.current_stride = 1  # product of the strides applied so far
        self.rate = 1  # atrous rate for layers past the target output stride

    def depth(self, depth: int, min_multiplier: float | None = None) -> int:
        """A layer's channel count under the family's rounding rule."""
        o = self.options
        alpha = o.depth_multiplier if min_multiplier is None else max(o.depth_multiplier,
                                                                      min_multiplier)
        if self.family == "v1":
            return max(int(depth * alpha), o.min_depth)
        return make_divisible(depth * alpha, o.divisible_by, o.min_depth)

    def stride_and_rate(self, stride: int) -> tuple[int, int]:
        """TF-slim's rule: past ``output_stride``, strides turn into dilation of later layers."""
        if self.options.output_stride is not None and self.current_stride == self.options.output_stride:
            layer_rate = self.rate
            self.rate *= stride
            return 1, layer_rate
        self.current_stride *= stride
        return stride, 1

    def _padding(self, op, kernel, stride, dilation):
        if self.options.padding == "keras" and op == "depthwise" and stride == 2:
            return KERAS_STRIDE2_DEPTHWISE_PADS
        if self.options.padding in ("SAME", "keras"):
            return "SAME"
        pads = [k // 2 * dilation for k in kernel]
        return pads[0] if pads[0] == pads[1] else [[pads[0]] * 2, [pads[1]] * 2]

    def conv(self, name, op, kernel, stride, dilation, out_channels, activation) -> Node:
        """A conv or depthwise node (with batch norm) applied to the current tensor."""
        kernel = tuple(kernel) if isinstance(kernel, list | tuple) else (kernel, kernel)
        dilation = 1 if kernel == (1, 1) else dilation
        in_channels = self.shape[2]
        padding = self._padding(op, kernel, stride, dilation)
        pads = resolve_padding(padding, self.shape[:2], kernel, (stride, stride), (dilation, dilation))
        out_hw = conv_output_hw(self.shape[:2], kernel, (stride, stride), (dilation, dilation), pads,
                                what=f"{name} (input {self.shape[0]}x{self.shape[1]})")
        if op == "depthwise":
            out_channels = in_channels
            weight_shape = (*kernel, in_channels, 1)
        else:
            weight_shape = (*kernel, in_channels, out_channels)
        weights = math.prod(weight_shape)
        o = self.options
        attrs = {"kernel": list(kernel), "stride": stride, "dilation": dilation, "padding": padding,
                 "in_channels": in_channels, "out_channels": out_channels,
                 "activation": activation,
                 "batch_norm": {"eps": o.bn_eps, "momentum": o.bn_momentum}}
        channel = (out_channels,)
        return self.append(Node(
            name, op, attrs, (self.current,), (*out_hw, out_channels), weights=weights,
            params=weights + 2 * out_channels, macs=out_hw[0] * out_hw[1] * weights,
            param_shapes={"weights": weight_shape, "BatchNorm/gamma": channel,
                          "BatchNorm/beta": channel},
            buffer_shapes={"BatchNorm/moving_mean": channel, "BatchNorm/moving_variance": channel}))

    def add(self, name, shortcut: str) -> Node:
        return self.append(Node(name, "add", {}, (self.current, shortcut), self.shape))

    def append(self, node: Node) -> Node:
        self.current, self.shape = node.name, node.out_shape
        return node


def _v1_body(rows, b: _Builder) -> Iterator[Node]:
    """TF-slim v1 names: row i is ``Conv2d_{i}``, or ``Conv2d_{i}_depthwise`` + ``_pointwise``."""
    act = b.options.activation
    for i, row in enumerate(rows):
        stride, rate = b.stride_and_rate(row["stride"])
        depth = b.depth(row["depth"], row.get("min_multiplier"))
        if row["type"] == "Conv":
            yield b.conv(f"Conv2d_{i}", "conv", row["kernel"], stride, rate, depth, act)
        else:
            yield b.conv(f"Conv2d_{i}_depthwise", "depthwise", row["kernel"], stride, rate, None, act)
            yield b.conv(f"Conv2d_{i}_pointwise", "conv", 1, 1, 1, depth, act)


def _v2_body(rows, b: _Builder) -> Iterator[Node]:
    """TF-slim v2 names: ``Conv``, ``Conv_1``, ...; ``expanded_conv``, ``expanded_conv_1``, ...

    Each bottleneck repeat is ``expand`` (1x1, omitted when t = 1), ``depthwise`` (stride s on the
    first of n repeats only), ``project`` (1x1, linear) and, when the stride is 1 and the channels
    match, the residual ``add``.
    """
    act = b.options.activation
    counters = {"Conv": 0, "expanded_conv": 0}

    def scope(base):
        index = counters[base]
        counters[base] += 1
        return base if index == 0 else f"{base}_{index}"

    for row in rows:
        if row["type"] == "Conv":
            stride, rate = b.stride_and_rate(row["stride"])
            depth = b.depth(row["depth"], row.get("min_multiplier"))
            yield b.conv(scope("Conv"), "conv", row["kernel"], stride, rate, depth, act)
            continue
        out_channels = b.depth(row["c"])
        for repeat in range(row["n"]):
            name = scope("expanded_conv")
            shortcut, in_channels = b.current, b.shape[2]
            stride, rate = b.stride_and_rate(row["s"] if repeat == 0 else 1)
            if row["t"] != 1:
                yield b.conv(f"{name}/expand", "conv", 1, 1, 1, in_channels * row["t"], act)
            yield b.conv(f"{name}/depthwise", "depthwise", 3, stride, rate, None, act)
            yield b.conv(f"{name}/project", "conv", 1, 1, 1, out_channels, None)
            if stride == 1 and in_channels == out_channels:
                yield b.add(f"{name}/add", shortcut)


def _head(family: str, b: _Builder) -> Iterator[Node]:
    o = b.options
    _check_input_size(o, b.current_stride)
    pool_name, dropout_name = HEAD_NAMES[family]
    h, w, c = b.shape
    if o.global_pool:
        attrs = {"mode": "global"}
    else:
        kernel = [min(h, SLIM_POOL_KERNEL), min(w, SLIM_POOL_KERNEL)]
        out_hw = [(h - kernel[0]) // SLIM_POOL_STRIDE + 1, (w - kernel[1]) // SLIM_POOL_STRIDE + 1]
        if out_hw != [1, 1]:
            raise ValueError(
                f"global_pool: slim's 7x7 average pool leaves a {out_hw[0]}x{out_hw[1]} map on the "
                f"{h}x{w} features of input_size {o.input_size[0]}x{o.input_size[1]}"
                f"{'' if o.output_stride is None else f' with output_stride {o.output_stride}'}; "
                f"use global_pool=True (--global-pool) or num_classes=0")
        attrs = {"mode": "slim", "kernel": kernel, "stride": SLIM_POOL_STRIDE}
    yield b.append(Node(pool_name, "pool", attrs, (b.current,), (c,)))
    if o.dropout > 0:
        yield b.append(Node(dropout_name, "dropout", {"rate": o.dropout}, (b.current,), (c,)))
    k = o.num_classes
    yield b.append(Node("Logits", "logits", {"in_features": c, "num_classes": k}, (b.current,), (k,),
                         weights=c * k, params=c * k + k, macs=c * k,
                         param_shapes={"weights": (c, k), "biases": (k,)}))


def expand(spec: dict, options: Options) -> Graph:
    """Expand a validated ``spec`` under resolved ``options`` into a :class:`Graph`.

    Raises ValueError for an unknown ``final_endpoint``, an input smaller than the network's
    total stride, or a slim pool that does not reduce the features to 1x1.
    """
    family = spec["family"]
    b = _Builder(family, options)
    stream = (_v1_body if family == "v1" else _v2_body)(spec["body"], b)
    if options.num_classes > 0:
        stream = itertools.chain(stream, _head(family, b))  # lazy: runs once the body is done
    nodes: list[Node] = []
    for node in stream:
        nodes.append(node)
        if node.name == options.final_endpoint:
            break
    else:
        if options.final_endpoint is not None:
            raise ValueError(f"final_endpoint: unknown endpoint {options.final_endpoint!r} "
                             f"(one of {', '.join(n.name for n in nodes)})")
    _check_input_size(options, b.current_stride)
    return Graph(spec["name"], family, options, (*options.input_size, INPUT_CHANNELS),
                 (b.current_stride, b.current_stride), nodes)


def _check_input_size(options: Options, total_stride: int) -> None:
    h, w = options.input_size
    if h < total_stride or w < total_stride:
        raise ValueError(f"input_size: {h}x{w} is smaller than the network's total stride "
                         f"{total_stride} (the smallest input is {total_stride}x{total_stride})")

"""The graph builder that spec rows (blocks) append nodes to, and the families' conventions.

A family fixes what the papers' tables leave implicit: how a width multiplier rounds channel
counts (v1: ``max(int(depth * alpha), min_depth)``; later families: the nearest multiple of
``divisible_by``, never below 90%), how nodes are named (TF-slim v1 names by row,
``Conv2d_<row>``; later families count scopes, ``Conv``, ``Conv_1``, ``expanded_conv_3``) and
the names of the head's nodes (its hidden layer, when there is one, is the next ``Conv`` scope,
as in TF-slim's MobileNetV3: ``Conv_2`` after the body's ``Conv`` and ``Conv_1``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..kinds import KINDS
from .graph import INPUT, INPUT_CHANNELS, Node
from .options import Options



def keras_stride2_pads(kernel: tuple[int, int]) -> list[list[int]]:
    """Keras's MobileNet (v1) and MobileNetV3 (``correct_pad`` on an input of unknown size) zero-pad
    ``(k // 2 - 1, k // 2)`` before each stride-2 depthwise convolution and run it VALID: equal to
    SAME on even sizes only. (Keras's v2 pads equal SAME everywhere.)"""
    return [[k // 2 - 1, k // 2] for k in kernel]


@dataclass(frozen=True)
class Family:
    rounding: str  # "floor" (TF-slim v1) or "make_divisible"
    names_by_row: bool  # v1: every row is Conv2d_<row>; else scope counters
    pool: str
    dropout: str


FAMILIES = {
    "v1": Family("floor", True, "AvgPool_1a", "Dropout_1b"),
    "v2": Family("make_divisible", False, "AvgPool", "Dropout"),
    "v3": Family("make_divisible", False, "AvgPool", "Dropout"),
    "v4": Family("make_divisible", False, "AvgPool", "Dropout"),
}


def make_divisible(value: float, divisor: int, min_value: int) -> int:
    """Round to the nearest multiple of ``divisor`` (at least ``min_value``), never below 90%."""
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class Builder:
    """Appends nodes while tracking the current tensor, its shape and the running stride."""

    def __init__(self, family: str, options: Options):
        self.family = FAMILIES[family]
        self.options = options
        self.nodes: list[Node] = []
        self.current = INPUT
        self.shape = (*options.input_size, INPUT_CHANNELS)
        self.current_stride = 1  # product of the strides applied so far
        self.rate = 1  # atrous rate for layers past the target output stride
        self.row = 0  # the spec row being expanded (v1 names)
        self._scopes: dict[str, int] = {}

    # -- naming and widths ---------------------------------------------------------------
    def scope(self, base: str) -> str:
        """The name of the next ``base`` scope: ``Conv2d_<row>`` in v1, else ``base``,
        ``base_1``, ``base_2``..."""
        if self.family.names_by_row:
            return f"Conv2d_{self.row}"
        index = self._scopes.get(base, 0)
        self._scopes[base] = index + 1
        return base if index == 0 else f"{base}_{index}"

    def depth(self, depth: int, min_multiplier: float | None = None, scaled: bool = True) -> int:
        """A layer's channel count under the width multiplier and the family's rounding rule."""
        o = self.options
        alpha = o.depth_multiplier if min_multiplier is None else max(o.depth_multiplier, min_multiplier)
        return self.round(depth * alpha if scaled else depth)

    def round(self, channels: float) -> int:
        """``channels`` rounded by the family's rule (no multiplier applied)."""
        o = self.options
        if self.family.rounding == "floor":
            return max(int(channels), o.min_depth)
        return make_divisible(channels, o.divisible_by, o.min_depth)

    def stride_and_rate(self, stride: int) -> tuple[int, int]:
        """TF-slim's rule: past ``output_stride``, strides turn into dilation of later layers."""
        if self.options.output_stride is not None and self.current_stride == self.options.output_stride:
            layer_rate = self.rate
            self.rate *= stride
            return 1, layer_rate
        self.current_stride *= stride
        return stride, 1

    def bottlenecks(self, row: dict, base: str):
        """The ``n`` repeats of a bottleneck row: yields ``(name, in_channels, stride, rate)``
        for the caller to append the repeat's layers, then adds the residual (``name/add``) when
        the stride is 1 and the output has the input's shape. Stride ``s`` goes to the first."""
        for repeat in range(row.get("n", 1)):
            name = self.scope(base)
            shortcut, in_shape = self.current, self.shape
            stride, rate = self.stride_and_rate(row["s"] if repeat == 0 else 1)
            yield name, in_shape[2], stride, rate
            if stride == 1 and self.shape == in_shape:
                self.node(f"{name}/add", "add", inputs=(self.current, shortcut))

    # -- appending nodes -----------------------------------------------------------------
    def node(self, name: str, kind: str, inputs: tuple[str, ...] | None = None, **attrs) -> Node:
        """Append a node of ``kind`` fed by ``inputs`` (default: the current tensor)."""
        inputs = (self.current,) if inputs is None else inputs
        shapes = [self.shape_of(i) for i in inputs]
        try:
            layout = KINDS[kind].layout(attrs, shapes)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        node = Node(name, kind, attrs, inputs, layout)
        self.nodes.append(node)
        self.current, self.shape = node.name, node.out_shape
        return node

    def shape_of(self, name: str) -> tuple[int, ...]:
        if name == INPUT:
            return (*self.options.input_size, INPUT_CHANNELS)
        for node in reversed(self.nodes):
            if node.name == name:
                return node.out_shape
        raise KeyError(f"node {name!r} is not in the graph")

    def conv(self, name: str, kernel, stride: int, dilation: int, out_channels: int | None,
             activation: str | None, depthwise: bool = False) -> Node:
        """A conv (or depthwise) + batch norm + activation node on the current tensor, padded as
        the options say; ``out_channels`` is ignored for a depthwise node."""
        kernel = tuple(kernel) if isinstance(kernel, list | tuple) else (kernel, kernel)
        dilation = 1 if kernel == (1, 1) else dilation
        in_channels = self.shape[2]
        padding = self._padding(depthwise, kernel, stride, dilation)
        o = self.options
        return self.node(name, "depthwise" if depthwise else "conv", kernel=list(kernel),
                         stride=stride, dilation=dilation, padding=padding, in_channels=in_channels,
                         out_channels=in_channels if depthwise else out_channels,
                         activation=activation,
                         batch_norm={"eps": o.bn_eps, "momentum": o.bn_momentum})

    def _padding(self, depthwise: bool, kernel, stride: int, dilation: int):
        if self.options.padding == "keras" and depthwise and stride == 2:
            return keras_stride2_pads(kernel)
        if self.options.padding in ("SAME", "keras"):
            return "SAME"
        pads = [k // 2 * dilation for k in kernel]
        return pads[0] if pads[0] == pads[1] else [[pads[0]] * 2, [pads[1]] * 2]

    def check_input_size(self) -> None:
        h, w = self.options.input_size
        s = self.current_stride
        if h < s or w < s:
            raise ValueError(f"input_size: {h}x{w} is smaller than the network's total stride "
                             f"{s} (the smallest input is {s}x{s})")


__all__ = ["Builder", "FAMILIES", "Family", "make_divisible"]

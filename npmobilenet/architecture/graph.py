"""The expanded network: an ordered list of named nodes, with shapes and costs known from shapes.

Each node has a kind (``op``, a name in :data:`npmobilenet.kinds.KINDS`: ``conv``, ``depthwise``,
``add``, ``squeeze_excite``, ``pool``, ``dropout``, ``linear``, ...), attrs, input node names (the
image is ``"input"``), and its :class:`~npmobilenet.kinds.Layout`: the per-image output shape,
parameters and buffers, ``weights`` (kernel entries, what TF-slim's tables call params),
``params`` (all trainable entries: kernels, batch-norm gamma and beta, biases) and ``macs``.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from ..kinds import Layout
from .options import Options

INPUT = "input"
INPUT_CHANNELS = 3


@dataclass
class Node:
    """One graph node; parameter and buffer keys are the names after ``node/``."""

    name: str
    op: str
    attrs: dict
    inputs: tuple[str, ...]
    layout: Layout

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.layout.out_shape

    @property
    def weights(self) -> int:
        return self.layout.weights

    @property
    def params(self) -> int:
        return self.layout.trainable

    @property
    def macs(self) -> int:
        return self.layout.macs

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: p.shape for key, p in self.layout.params.items()}

    @property
    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: p.shape for key, p in self.layout.buffers.items()}

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

    def summary_dict(self, frozen: Collection[str] = (), dtype=np.float32) -> dict:
        """Per-layer rows and totals, as printed by ``npmobilenet summary --json``.

        ``frozen``: names ``"{node}/{param}"`` of parameters that are not trained. Each row gives
        ``params`` (all trainable entries: kernels, batch-norm gamma and beta, biases), split
        into ``trainable`` and ``frozen``; ``param_bytes`` (parameters and moving statistics)
        and ``activation_bytes`` (the node's output for one image) at ``dtype``.
        """
        itemsize = np.dtype(dtype).itemsize
        layers = []
        for n in self.nodes:
            fixed = sum(math.prod(p.shape) for key, p in n.layout.params.items()
                        if f"{n.name}/{key}" in frozen)
            buffers = sum(math.prod(p.shape) for p in n.layout.buffers.values())
            layers.append({"name": n.name, "op": n.op, "output_shape": list(n.out_shape),
                           "weights": n.weights, "params": n.params, "trainable": n.params - fixed,
                           "frozen": fixed, "buffers": buffers,
                           "param_bytes": (n.params + buffers) * itemsize,
                           "activation_bytes": math.prod(n.out_shape) * itemsize, "macs": n.macs})
        total = {key: sum(row[key] for row in layers) for key in _SUMMED}
        return {"layers": layers, "total": {**total, "dtype": np.dtype(dtype).name}}

    def summary(self, frozen: Collection[str] = (), dtype=np.float32) -> str:
        """A per-layer table like TF-slim's docstring tables and torchinfo's, with totals:
        output shape, weights, parameters (and how many are frozen), parameter and activation
        memory, MACs. Arguments as :meth:`summary_dict`."""
        summary = self.summary_dict(frozen, dtype)
        header = ("Layer", "op", "output shape", "weights", "params", "frozen", "param mem",
                  "act mem", "MACs")
        rows = [(r["name"], r["op"], "x".join(map(str, r["output_shape"])), f"{r['weights']:,}",
                 f"{r['params']:,}", f"{r['frozen']:,}", _bytes(r["param_bytes"]),
                 _bytes(r["activation_bytes"]), f"{r['macs']:,}") for r in summary["layers"]]
        t = summary["total"]
        footer = ("Total", "", "", f"{t['weights']:,}", f"{t['params']:,}", f"{t['frozen']:,}",
                  _bytes(t["param_bytes"]), _bytes(t["activation_bytes"]), f"{t['macs']:,}")
        widths = [max(len(row[i]) for row in (header, *rows, footer)) for i in range(len(header))]

        def line(row):
            left = [row[i].ljust(widths[i]) for i in range(3)]
            right = [row[i].rjust(widths[i]) for i in range(3, len(header))]
            return "  ".join(left + right).rstrip()

        rule = "-" * len(line(header))
        notes = [f"Trainable parameters: {t['trainable']:,}; frozen: {t['frozen']:,}; batch-norm "
                 f"moving statistics (not trained): {t['buffers']:,}",
                 f"Parameter memory: {_bytes(t['param_bytes'])} ({t['dtype']}, moving statistics "
                 f"included)",
                 f"Activation memory: {_bytes(t['activation_bytes'])} per image ({t['dtype']}, every "
                 f"layer's output in one forward pass; training keeps them all for backward)"]
        return "\n".join([line(header), rule, *map(line, rows), rule, line(footer), "", *notes])

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


_SUMMED = ("weights", "params", "trainable", "frozen", "buffers", "param_bytes",
           "activation_bytes", "macs")


def _bytes(count: int) -> str:
    """A byte count for people: B, KiB, MiB or GiB with three significant digits."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} B"


def dot_string(text: str) -> str:
    """``text`` as a DOT double-quoted string: backslashes and quotes escaped, line breaks as
    DOT's ``\\n`` escape, other control characters dropped."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + "".join(c for c in escaped if c.isprintable()) + '"'

"""The node-kind table: what a kind of graph node means, declared once, read by every layer.

A kind (one module in this package, in the manner of JAX's ``stax``: shapes known when the graph
is built, a function to run it) declares:

``layout(attrs, input_shapes)``
    the node's per-image output shape, its parameters and buffers (shape and initialiser) and
    its cost, computed from shapes alone;
``forward(model, node, *inputs)``
    the node run with :mod:`npmobilenet.functional` ops (autograd gives training for free);
``compile(node, arrays)``
    optional: an inference step (batch norm folded, outputs into reused buffers) for the
    inference plan; a kind without one runs ``forward`` for its own nodes only;
``torch(node)``
    optional: an equivalent ``torch.nn.Module`` over NCHW tensors (the benchmark's twin; torch is
    imported only when it is called);
``sources``
    how frameworks name and lay out its parameters, for the converters: per convention
    (``"torch"``, ``"keras"``, ``"slim"``), parameter key -> (name template over the node's
    source prefixes, layout);
``onnx(node, g)``
    optional: the node as ONNX operators, for :mod:`npmobilenet.export.onnx` (batch norm
    folded, NCHW): ``g`` gives the input tensor names, the node's arrays and the input size,
    adds initializers and operators; returns the name of the node's output. A model with a
    kind lacking it cannot be exported.

Graph expansion, the model, the inference plan, summaries, the profiler, the benchmark and the
converters look kinds up here by ``node.op``; none of them names one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["KINDS", "Layout", "NodeKind", "Param", "SourceLayout", "register_kind"]


@dataclass(frozen=True)
class Param:
    """A parameter or buffer: its shape and how it starts.

    ``init`` is ``"conv"`` (kaiming-normal with ``fan_out`` under the torchvision scheme),
    ``"linear"`` (N(0, 0.01)), or a constant: ``"zeros"`` / ``"ones"``.
    """

    shape: tuple[int, ...]
    init: str
    fan_out: int = 0


@dataclass(frozen=True)
class Layout:
    """What a node is, from shapes alone."""

    out_shape: tuple[int, ...]
    params: Mapping[str, Param] = field(default_factory=dict)
    buffers: Mapping[str, Param] = field(default_factory=dict)
    weights: int = 0  # kernel entries (what TF-slim's tables call params)
    macs: int = 0

    @property
    def trainable(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.params.values())


@dataclass(frozen=True)
class SourceLayout:
    """Turns a framework's tensor into ours. ``source_shapes(ours)`` lists the shapes the
    framework may store it in (the first is named in error messages)."""

    to_ours: Callable[[np.ndarray], np.ndarray]
    source_shapes: Callable[[tuple], tuple[tuple, ...]]


@dataclass(frozen=True)
class NodeKind:
    name: str
    layout: Callable[[dict, list[tuple]], Layout]
    forward: Callable
    compile: Callable | None = None
    torch: Callable | None = None
    sources: Mapping[str, Mapping[str, tuple[str, SourceLayout]]] = field(default_factory=dict)
    onnx: Callable | None = None


KINDS: dict[str, NodeKind] = {}


def register_kind(kind: NodeKind) -> NodeKind:
    """Add ``kind`` to the table (its name must be new); returns it."""
    if kind.name in KINDS:
        raise ValueError(f"node kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind

"""The inference fast path: a graph compiled for evaluation.

Each node whose kind has a ``compile`` (see :mod:`npmobilenet.kinds`) gets a step built once
from the model's arrays: a convolution with its batch norm folded into the weights, writing into
a reused buffer with bias and activation in its epilogue; a residual add in place; and so on. A
node whose kind has none runs its ordinary forward, for that node only, and the plan carries on.

A batch runs the high-resolution layers (output stride up to ``CHUNK_STRIDE``) a few images at
a time, so each image's activations are still in the cache when the next layer reads them, and
the rest of the graph on the whole batch, where larger GEMMs pay. (Measured on 2-core Zen 5
machines, one thread: MobileNet v2's layers up to stride 8 cost 5.8 ms per image at batch 8
through the whole batch at once, 3.3 ms one image at a time.)

What is kept: by default every node's output (the model's ``end_points``); each chunk then
writes into its slice of the whole batch's arrays. Asked to keep only some nodes (``keep``),
the plan gives an array back to its pool as soon as the last node reading it has run, so the
next layers write into memory that is still in the cache, and the peak is a few activations
instead of all of them; chunked layers then use arrays of one chunk's size.

Arrays (:class:`Buffers`) are reused by the next call, unless the caller still holds one (an
end point, the output): a held array is left alone and a new one is allocated, so arrays
returned earlier never change. The folded weights are a snapshot: the model drops its plan
whenever its parameters may change (load_state_dict, train/eval, a forward recorded for
backward); after editing parameter arrays in place by hand, call ``model.eval()`` again. Like
``end_points``, a plan serves one call at a time. An active trace (:mod:`npmobilenet.tracing`)
records each compiled step as ``plan.<kind>``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable

import numpy as np

from . import tracing
from .architecture.graph import INPUT
from .autograd import Tensor
from .kinds import KINDS

# Layers whose output stride (input side / output side) is at most this run chunk by chunk.
CHUNK_STRIDE = 8
# Images per chunk: as many as keep the largest chunked activation within this many bytes.
CHUNK_BYTES = 12 << 20


def _unheld(array: np.ndarray) -> bool:
    """Whether only the pool refers to ``array``. Called with the pool's own array: its four
    references are the pool's, the caller's local name, this parameter and getrefcount's
    argument; any more is someone else's (an array cut from a block refers to the block)."""
    return sys.getrefcount(array) <= 4


class Buffers:
    """The arrays the compiled steps write into, reused from call to call.

    ``output``/``scratch`` keep one array per node. ``take`` hands out arrays of any shape cut
    from a pool of byte blocks, the smallest free block that fits (a new one when none does): a
    block is free again as soon as nothing holds an array cut from it, so a call that drops
    each activation after its last reader runs in a few blocks. An array is handed out again
    only when nothing but this object refers to it, which CPython's reference count tells (the
    one place that relies on it: a caller holding an end point keeps its array).
    """

    def __init__(self):
        self._by_node: dict[tuple, np.ndarray] = {}
        self._blocks: list[np.ndarray] = []

    def output(self, node: str, shape: tuple, dtype) -> np.ndarray:
        return self._node_array((node, "out"), shape, dtype)

    def scratch(self, node: str, shape: tuple, dtype) -> np.ndarray:
        return self._node_array((node, "scratch"), shape, dtype)

    def _node_array(self, key, shape, dtype) -> np.ndarray:
        array = self._by_node.get(key)
        if array is None or array.shape != shape or array.dtype != dtype or not _unheld(array):
            array = self._by_node[key] = np.empty(shape, dtype)
        return array

    def take(self, shape: tuple, dtype) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` cut from a free block."""
        size = math.prod(shape) * np.dtype(dtype).itemsize
        best = None
        for block in self._blocks:
            if size <= block.size and (best is None or block.size < best.size) and _unheld(block):
                best = block
        if best is None:
            best = np.empty(size, np.uint8)
            self._blocks.append(best)
        return best[:size].view(dtype).reshape(shape)


class PooledOutputs:
    """Step outputs for a call that keeps only some nodes: the kept ones in arrays of their
    own (a caller holding one never pins a block), the others cut from the pool."""

    def __init__(self, buffers: Buffers, keep: set[str]):
        self.buffers, self.keep = buffers, keep

    def output(self, node: str, shape: tuple, dtype) -> np.ndarray:
        if node in self.keep:
            return self.buffers.output(node, shape, dtype)
        return self.buffers.take(shape, dtype)

    def scratch(self, node: str, shape: tuple, dtype) -> np.ndarray:
        return self.buffers.scratch(node, shape, dtype)


class ChunkOutputs:
    """The outputs of one chunk of ``total`` images: for the ``whole`` nodes, slices
    ``[start:start + n]`` of whole-batch arrays from ``outputs`` (made once per call); for the
    others, arrays of the chunk's size from ``outputs``."""

    def __init__(self, buffers: Buffers, outputs, total: int, whole: set[str]):
        self.buffers, self.outputs, self.total, self.whole = buffers, outputs, total, whole
        self.full: dict[str, np.ndarray] = {}
        self.start, self._views = 0, {}

    def next_chunk(self, start: int) -> None:
        self.start, self._views = start, {}

    def output(self, node: str, shape: tuple, dtype) -> np.ndarray:
        if node not in self.whole:
            return self.outputs.output(node, shape, dtype)
        view = self._views.get(node)
        if view is None:
            full = self.full.get(node)
            if full is None:
                full = self.full[node] = self.outputs.output(node, (self.total, *shape[1:]), dtype)
            view = self._views[node] = full[self.start:self.start + shape[0]]
        return view

    def scratch(self, node: str, shape: tuple, dtype) -> np.ndarray:
        return self.buffers.scratch(node, shape, dtype)


class InferencePlan:
    """A model's graph ready to run in eval mode without recording anything.

    Parameters
    ----------
    graph : Graph
    arrays : mapping ``"{node}/{param}"`` -> ndarray, parameters and buffers of one dtype.
    forward : callable(node, *Tensor) -> Tensor
        The model's ordinary forward of one node, for kinds without a compiled step.
    """

    def __init__(self, graph, arrays, forward: Callable):
        self.graph = graph
        self.forward = forward
        self.steps = {node.name: KINDS[node.op].compile(node, arrays)
                      for node in graph.nodes if KINDS[node.op].compile is not None}
        self.buffers = Buffers()
        self.calls = 0  # how many forwards ran through the plan (tests check it is taken)
        self.position = {node.name: index for index, node in enumerate(graph.nodes)}
        self.last_reader = {INPUT: -1, **self.position}  # the last node reading each output
        for node in graph.nodes:
            for name in node.inputs:
                self.last_reader[name] = max(self.last_reader[name], self.position[node.name])
        in_side = graph.input_shape[0]
        self.chunked = {node.name for node in graph.nodes
                        if len(node.out_shape) == 3 and in_side <= CHUNK_STRIDE * node.out_shape[0]}
        # The largest chunked activation, in values per input pixel (it scales with the input).
        self.chunk_values_per_pixel = max((math.prod(node.out_shape) for node in graph.nodes
                                           if node.name in self.chunked), default=0) / in_side ** 2

    def __call__(self, x: np.ndarray, start: str = INPUT, keep=None) -> dict[str, np.ndarray]:
        """Run the nodes after ``start`` on its activation ``x``; returns node name -> output
        for every node, or, given ``keep`` (node names), for those and the graph's output."""
        self.calls += 1
        nodes = self._nodes_after(start)
        keep = None if keep is None else {*keep, self.graph.output}
        outputs = self.buffers if keep is None else PooledOutputs(self.buffers, keep)
        values = {start: x}
        prefix = 0
        while start == INPUT and prefix < len(nodes) and nodes[prefix].name in self.chunked:
            prefix += 1
        if prefix and self.chunk_size(x) < x.shape[0]:
            values.update(self._run_chunked(x, nodes[:prefix], nodes[prefix], keep, outputs))
            nodes = nodes[prefix:]
        protected = None if keep is None else keep | {start}
        for node in nodes:
            values[node.name] = self._run_node(node, values, outputs)
            if protected is not None:
                self._release(node, values, protected)
        values.pop(start)
        return values if keep is None else {name: values[name] for name in keep if name in values}

    def chunk_size(self, x: np.ndarray) -> int:
        """Images per chunk for an input batch ``x``."""
        largest = self.chunk_values_per_pixel * x.shape[1] * x.shape[2] * x.itemsize
        return max(1, int(CHUNK_BYTES // largest)) if largest else x.shape[0]

    def _run_chunked(self, x, nodes, next_node, keep, outputs) -> dict[str, np.ndarray]:
        """Run ``nodes`` chunk by chunk; returns the whole batch's outputs that are needed
        later (every node's, when ``keep`` is None)."""
        after = self.position[next_node.name]
        whole = {node.name for node in nodes
                 if keep is None or node.name in keep or self.last_reader[node.name] >= after}
        buffers = ChunkOutputs(self.buffers, outputs, x.shape[0], whole)
        chunk, protected = self.chunk_size(x), whole | {INPUT}
        for first in range(0, x.shape[0], chunk):
            buffers.next_chunk(first)
            part = {INPUT: x[first:first + chunk]}
            for node in nodes:
                result = self._run_node(node, part, buffers)
                if node.name in whole:
                    target = buffers.output(node.name, result.shape, result.dtype)
                    if result is not target:  # a forward that made its own array
                        target[...] = result
                    result = target
                part[node.name] = result
                if keep is not None:
                    self._release(node, part, protected)
        return {name: buffers.full[name] for name in whole}

    def _release(self, node, values: dict, protected: set[str]) -> None:
        """Drop the arrays of ``node``'s inputs that no later node reads (their blocks are then
        free), except the ``protected`` ones (kept, whole-batch views, the caller's input)."""
        for name in node.inputs:
            if name not in protected and self.last_reader[name] == self.position[node.name]:
                values.pop(name, None)

    def _run_node(self, node, values: dict, buffers) -> np.ndarray:
        inputs = [values[i] for i in node.inputs]
        step = self.steps.get(node.name)
        tracer = tracing.ACTIVE
        if step is None:
            if tracer is not None:
                tracer.node = node.name
            result = self.forward(node, *(Tensor(v) for v in inputs)).data
            if tracer is not None:
                tracer.node = None
            return result
        if tracer is None:
            return step(inputs, buffers)
        started = time.perf_counter()
        result = step(inputs, buffers)
        tracer.record_step(node, inputs, result, time.perf_counter() - started)
        return result

    def _nodes_after(self, start):
        nodes = self.graph.nodes
        if start == INPUT:
            return nodes
        index = [node.name for node in nodes].index(start)
        return nodes[index + 1:]


__all__ = ["Buffers", "ChunkOutputs", "InferencePlan", "PooledOutputs"]

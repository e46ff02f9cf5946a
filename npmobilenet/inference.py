"""The inference fast path: a graph compiled for evaluation.

Each node whose kind has a ``compile`` (see :mod:`npmobilenet.kinds`) gets a step built once
from the model's arrays: a convolution with its batch norm folded into the weights, writing into
a reused buffer with bias and activation in its epilogue; a residual add in place; and so on. A
node whose kind has none runs its ordinary forward, for that node only, and the plan carries on.

Buffers (:class:`Buffers`) are kept per node and reused by the next call, unless the caller
still holds one (an end point, the output): a held buffer is left alone and a new one is
allocated, so arrays returned earlier never change. The folded weights are a snapshot: the model
drops its plan whenever its parameters may change (load_state_dict, train/eval, a forward
recorded for backward); after editing parameter arrays in place by hand, call ``model.eval()``
again. Like ``end_points``, a plan serves one call at a time. An active trace
(:mod:`npmobilenet.tracing`) records each compiled step as ``plan.<kind>``.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np

from . import tracing
from .architecture.graph import INPUT
from .autograd import Tensor
from .kinds import KINDS


class Buffers:
    """Output and scratch arrays of the compiled steps, reused from call to call.

    An array is handed out again only when nothing but this pool refers to it, which CPython's
    reference count tells (the one place that relies on it: a caller holding an end point keeps
    its array, and the step gets a fresh one).
    """

    def __init__(self):
        self._arrays: dict[tuple, np.ndarray] = {}

    def output(self, node: str, shape: tuple, dtype) -> np.ndarray:
        return self._get((node, "out"), shape, dtype, np.empty)

    def scratch(self, node: str, shape: tuple, dtype) -> np.ndarray:
        return self._get((node, "scratch"), shape, dtype, np.empty)

    def _get(self, key, shape, dtype, allocate) -> np.ndarray:
        array = self._arrays.get(key)
        # References: the dict, `array` and getrefcount's argument; any more is someone else's.
        if array is None or array.shape != shape or array.dtype != dtype or sys.getrefcount(array) > 3:
            array = self._arrays[key] = allocate(shape, dtype)
        return array


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

    def __call__(self, x: np.ndarray, start: str = INPUT) -> dict[str, np.ndarray]:
        """Run the nodes after ``start`` on its activation ``x``; returns node name -> output."""
        self.calls += 1
        values = {start: x}
        tracer = tracing.ACTIVE
        for node in self._nodes_after(start):
            inputs = [values[i] for i in node.inputs]
            step = self.steps.get(node.name)
            if step is None:
                if tracer is not None:
                    tracer.node = node.name
                values[node.name] = self.forward(node, *(Tensor(v) for v in inputs)).data
            elif tracer is None:
                values[node.name] = step(inputs, self.buffers)
            else:
                started = time.perf_counter()
                values[node.name] = step(inputs, self.buffers)
                tracer.record_step(node, inputs, values[node.name], time.perf_counter() - started)
        if tracer is not None:
            tracer.node = None
        values.pop(start)
        return values

    def _nodes_after(self, start):
        nodes = self.graph.nodes
        if start == INPUT:
            return nodes
        index = [node.name for node in nodes].index(start)
        return nodes[index + 1:]


__all__ = ["Buffers", "InferencePlan"]

"""Per-node timing: where a forward (and backward) pass spends its time.

Each graph node is timed on its own: its inputs are the activations of a real forward pass,
detached, and (with ``train``) its backward runs from a ones cotangent. The figures are medians
over ``repeats`` runs after a warm-up, so Numba compilation is excluded. :func:`profile_model`
times the op-by-op path (what training runs); :func:`profile_plan` the inference plan's
compiled steps (what ``model(x)`` runs in eval mode under ``no_grad``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from .architecture.graph import INPUT
from .autograd import Tensor, no_grad
from .kinds import KINDS
from .model import Model


@dataclass
class NodeTiming:
    name: str
    op: str
    macs: int  # for the whole batch
    forward_ms: float
    backward_ms: float | None

    @property
    def gflops(self) -> float:
        """Achieved GFLOP/s (2 FLOPs per MAC; backward counts twice the forward's work)."""
        work = 2 * self.macs * (3 if self.backward_ms is not None else 1)
        seconds = (self.forward_ms + (self.backward_ms or 0.0)) / 1e3
        return work / seconds / 1e9 if seconds > 0 else 0.0


def profile_model(model: Model, batch: int, train: bool = False, repeats: int = 5,
                  seed: int = 0) -> list[NodeTiming]:
    """Time every node of ``model`` on a random batch of its input size."""
    height, width, channels = model.graph.input_shape
    x = np.random.default_rng(seed).standard_normal((batch, height, width, channels)).astype(model.dtype)
    model.train(train)
    with no_grad():
        model(x)
    values = {INPUT: x, **{name: t.data for name, t in model.end_points.items()}}
    timings = []
    for node in model.graph.nodes:
        inputs = [values[i] for i in node.inputs]
        forward, backward = [], []
        for attempt in range(repeats + 1):
            # The image needs no gradient, as in training; every activation does.
            tensors = [Tensor(a, requires_grad=train and name != INPUT) for a, name in zip(inputs, node.inputs)]
            forward_node = KINDS[node.op].forward
            start = time.perf_counter()
            if train:
                out = forward_node(model, node, *tensors)
            else:
                with no_grad():
                    out = forward_node(model, node, *tensors)
            middle = time.perf_counter()
            if train and out.requires_grad:
                out.backward(np.ones_like(out.data))
            end = time.perf_counter()
            if attempt:  # the first run warms up (and compiles)
                forward.append(middle - start)
                backward.append(end - middle)
        timings.append(NodeTiming(node.name, node.op, node.macs * batch,
                                  1e3 * statistics.median(forward),
                                  1e3 * statistics.median(backward) if train else None))
    model.zero_grad()
    return timings


def profile_plan(model: Model, batch: int, repeats: int = 5, seed: int = 0) -> list[NodeTiming]:
    """Time every step of ``model``'s inference plan on a random batch of its input size."""
    height, width, channels = model.graph.input_shape
    x = np.random.default_rng(seed).standard_normal((batch, height, width, channels)).astype(model.dtype)
    model.eval()
    with no_grad():
        model(x)  # builds the plan and its buffers
    plan = model._plan
    values = {INPUT: x, **{name: t.data for name, t in model.end_points.items()}}
    timings = []
    for node in model.graph.nodes:
        inputs = [values[i] for i in node.inputs]
        step = plan.steps.get(node.name)
        times = []
        for attempt in range(repeats + 1):
            start = time.perf_counter()
            with no_grad():
                if step is not None:
                    step(inputs, plan.buffers)
                else:
                    plan.forward(node, *(Tensor(v) for v in inputs))
            if attempt:
                times.append(time.perf_counter() - start)
        timings.append(NodeTiming(node.name, node.op, node.macs * batch,
                                  1e3 * statistics.median(times), None))
    return timings


def format_profile(timings: list[NodeTiming]) -> str:
    """A table of nodes with their times, share of the total, MACs and GFLOP/s."""
    train = timings[0].backward_ms is not None
    total = sum(t.forward_ms + (t.backward_ms or 0.0) for t in timings)
    header = f"{'node':32s} {'op':14s} {'forward ms':>10s}" + (f" {'backward ms':>11s}" if train else "")
    lines = [header + f" {'share':>6s} {'MMACs':>9s} {'GFLOP/s':>8s}", "-" * (len(header) + 26)]
    for t in timings:
        spent = t.forward_ms + (t.backward_ms or 0.0)
        row = f"{t.name:32s} {t.op:14s} {t.forward_ms:10.3f}" + (f" {t.backward_ms:11.3f}" if train else "")
        lines.append(row + f" {100 * spent / total:5.1f}% {t.macs / 1e6:9.1f} {t.gflops:8.1f}")
    forward = sum(t.forward_ms for t in timings)
    summary = f"{'total':32s} {'':14s} {forward:10.3f}" + (f" {total - forward:11.3f}" if train else "")
    lines += ["-" * (len(header) + 26), summary]
    return "\n".join(lines)

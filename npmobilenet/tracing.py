"""The op trace: what the engine ran, op by op, forward and backward.

``with npmobilenet.trace() as t:`` records, in order, every registered op applied (in
``ops.registry.apply``), every vector-Jacobian product ``backward`` runs, and every compiled step
of the inference plan. ``t.records`` is a list of dicts:

``id``        the record's index in ``t.records``
``op``        the registered op name (``"conv2d"``, ...); ``"plan.<kind>"`` for a plan step
``phase``     ``"forward"`` or ``"backward"``
``node``      the graph node the model was running (``"Conv2d_1_depthwise"``), or None
``inputs``    the op's input shapes; ``output``: its output shape (for a backward record the
              same op's shapes: the gradients it computes have the input shapes)
``dtype``     the output's dtype
``bytes``     bytes the record produced: the output (forward) or the input gradients (backward)
``seconds``   time in the op's forward or vjp alone
``sources``   ids of the records whose results this one read: the producers of its inputs
              (forward); its forward record, then the backward records that sent it gradient
              (backward)
``forward``   (backward records) the id of the forward record it differentiates

Off, the engine pays one check per op: ``ACTIVE is None``. This module imports nothing from the
package at load time, so the engine's lowest layer can import it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["ACTIVE", "Trace", "trace"]

ACTIVE: "Trace | None" = None  # the trace recording now, if any


class Trace:
    """The records of one ``trace()`` block; see the module docstring for their fields."""

    def __init__(self):
        self.records: list[dict] = []
        self.node: str | None = None  # the graph node running now, set by the model and the plan
        self._consumers: dict[int, list[int]] = {}  # forward id -> forward ids reading its output
        self._backward_of: dict[int, int] = {}  # forward id -> the id of its backward record
        self._step_of: dict[str, int] = {}  # graph node -> the id of its latest plan step

    # -- recording (called by the engine) ----------------------------------------------------
    def _add(self, op: str, phase: str, node: str | None, inputs, output, dtype, nbytes: int,
             seconds: float, sources: list[int]) -> dict:
        record = {"id": len(self.records), "op": op, "phase": phase, "node": node,
                  "inputs": [list(shape) for shape in inputs], "output": list(output),
                  "dtype": str(dtype), "bytes": int(nbytes), "seconds": seconds,
                  "sources": list(dict.fromkeys(sources))}  # an input used twice is one source
        self.records.append(record)
        return record

    def _link(self, tensor) -> int | None:
        """The id of this trace's record that produced ``tensor``, if any."""
        link = tensor.trace_link
        return link[1] if link is not None and link[0] is self else None

    def record_forward(self, op: str, inputs: Sequence, result, seconds: float) -> None:
        """One op applied to Tensors ``inputs``, giving Tensor ``result``."""
        sources = [i for i in map(self._link, inputs) if i is not None]
        record = self._add(op, "forward", self.node, (t.shape for t in inputs), result.shape,
                           result.dtype, result.data.nbytes, seconds, sources)
        for source in record["sources"]:
            self._consumers.setdefault(source, []).append(record["id"])
        result.trace_link = (self, record["id"])

    def record_backward(self, op: str, output, inputs: Sequence, grads: Sequence, seconds: float) -> None:
        """The vjp of the op that produced Tensor ``output`` from ``inputs`` returned ``grads``."""
        forward = self._link(output)
        sources = []
        if forward is not None:
            sources.append(forward)
            sources.extend(self._backward_of[i] for i in self._consumers.get(forward, ())
                           if i in self._backward_of)
        node = None if forward is None else self.records[forward]["node"]
        record = self._add(op, "backward", node, (t.shape for t in inputs), output.shape,
                           output.dtype, sum(g.nbytes for g in grads if g is not None), seconds,
                           sources)
        record["forward"] = forward
        if forward is not None:
            self._backward_of[forward] = record["id"]

    def record_step(self, node, inputs: Sequence[np.ndarray], out: np.ndarray, seconds: float) -> None:
        """The inference plan's compiled step of graph node ``node``."""
        sources = [self._step_of[name] for name in node.inputs if name in self._step_of]
        record = self._add(f"plan.{node.op}", "forward", node.name, (a.shape for a in inputs),
                           out.shape, out.dtype, out.nbytes, seconds, sources)
        self._step_of[node.name] = record["id"]

    # -- reading -------------------------------------------------------------------------------
    def table(self) -> str:
        """Print the records as a table (one line each, with totals per phase) and return it."""
        text = self._format_table()
        print(text)
        return text

    def _format_table(self) -> str:
        header = ("#", "phase", "op", "node", "inputs", "output", "dtype", "bytes", "ms")
        rows = [(str(r["id"]), r["phase"], r["op"], r["node"] or "",
                 " ".join(_shape(s) for s in r["inputs"]), _shape(r["output"]), r["dtype"],
                 f"{r['bytes']:,}", f"{1e3 * r['seconds']:.3f}") for r in self.records]
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        right = {0, 7, 8}

        def line(row):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip()

        totals = [f"{phase}: {sum(r['phase'] == phase for r in self.records)} records, "
                  f"{1e3 * sum(r['seconds'] for r in self.records if r['phase'] == phase):.3f} ms"
                  for phase in ("forward", "backward")]
        return "\n".join([line(header), *map(line, rows), "; ".join(totals)])

    def to_json(self) -> str:
        """The records as a JSON array, one record per line."""
        return "[\n" + ",\n".join(json.dumps(r) for r in self.records) + "\n]\n"

    def to_dot(self) -> str:
        """Graphviz DOT of the recorded tape: one node per record (boxes forward, grey ellipses
        backward), an edge from each record to the records that read its result."""
        from .architecture.graph import dot_string as q

        lines = ["digraph trace {", "  rankdir=TB;", "  node [fontsize=10];"]
        for r in self.records:
            label = "\n".join(part for part in (f"{r['op']} {r['phase']}", r["node"],
                                                _shape(r["output"])) if part)
            style = "shape=box" if r["phase"] == "forward" else "shape=ellipse, style=filled, fillcolor=grey90"
            lines.append(f"  r{r['id']} [label={q(label)}, {style}];")
            lines.extend(f"  r{source} -> r{r['id']};" for source in r["sources"])
        lines.append("}")
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        """Write the trace to ``path``: DOT for ``.dot``, JSON for ``.json``, else the table."""
        suffix = os.path.splitext(os.fspath(path))[1].lower()
        if suffix == ".dot":
            text = self.to_dot()
        elif suffix == ".json":
            text = self.to_json()
        else:
            text = self._format_table() + "\n"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)


def _shape(shape) -> str:
    return "x".join(map(str, shape)) or "()"  # () is a scalar


@contextlib.contextmanager
def trace() -> Iterator[Trace]:
    """Record every op forward and backward run inside the block; yields the :class:`Trace`.

    A trace opened inside another records the inner block alone; the outer one resumes after.
    The trace is process-wide: ops run by other threads meanwhile are recorded too.
    """
    global ACTIVE
    recording, previous = Trace(), ACTIVE
    ACTIVE = recording
    try:
        yield recording
    finally:
        ACTIVE = previous

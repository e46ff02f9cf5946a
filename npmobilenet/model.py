"""A MobileNet built from a graph: named parameters, train/eval, end points, state dicts.

``Model`` walks the graph's nodes in order, running each through its kind's ``forward``
(:data:`npmobilenet.kinds.KINDS`, built from :mod:`npmobilenet.functional`). Trainable parameters are
Tensors ``"{node}/{param}"``; batch-norm moving statistics are plain ndarray buffers, updated in
place in training mode and saved in the state dict, but not returned by ``parameters()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from . import memory, tracing
from .architecture import Graph, expand, load_spec, resolve_options
from .architecture.graph import INPUT
from .autograd import Tensor, is_grad_enabled, no_grad
from .inference import InferencePlan
from .init import init_parameters
from .kinds import KINDS
from .validate import check_state_values


# Tags dropout's keys apart from the augmentation's (seed, epoch, index): a SeedSequence
# ignores trailing zeros, so the keys must differ in a non-zero word.
DROPOUT_STREAM = 0x64726F70  # "drop"


class LoadResult(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Model:
    """Runs a :class:`~npmobilenet.architecture.Graph` with named parameters.

    Parameters
    ----------
    graph : Graph
    params, buffers : dict name -> ndarray
        Initial values (copied) with the shapes the graph declares, all of ``dtype``.
    dtype : float32 (default) or float64
    seed : int or None
        Seeds the dropout masks drawn outside :meth:`keyed_dropout`.

    A new model is in training mode (batch statistics, dropout), like torch's modules.
    """

    def __init__(self, graph: Graph, params: Mapping[str, np.ndarray],
                 buffers: Mapping[str, np.ndarray], dtype=np.float32, seed=None):
        self.graph = graph
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype: expected float32 or float64, got {self.dtype}")
        self._activations_per_image = sum(int(np.prod(node.out_shape)) for node in graph.nodes)
        self._params = {name: Tensor(np.zeros(shape, self.dtype), requires_grad=True)
                        for name, shape in graph.parameter_shapes().items()}
        self._buffers = {name: np.zeros(shape, self.dtype)
                         for name, shape in graph.buffer_shapes().items()}
        self.load_state_dict({**params, **buffers})
        self.training = True
        self.dropout_rng = np.random.default_rng(seed)
        self._dropout_key: tuple[int, int, np.ndarray] | None = None  # see keyed_dropout
        self.end_points: dict[str, Tensor] = {}
        self.frozen: set[str] = set()  # nodes whose parameters and moving statistics are fixed
        self.spec: dict | None = None  # the spec the graph was expanded from (kept by model files)
        self.preprocess: dict | None = None  # the input preset of converted or loaded weights
        self.class_names: list[str] | None = None  # one name per output class, kept by model files
        # Eval-mode calls that record nothing run a compiled plan (npmobilenet.inference):
        # batch norm folded into the weights, fused epilogues, reused buffers. False forces
        # the ordinary op-by-op path.
        self.fast_inference = True
        self._plan: InferencePlan | None = None

    # -- running ---------------------------------------------------------------------------
    def __call__(self, x, end_points=None) -> Tensor:
        """Run the graph on ``x`` (N, H, W, 3) of the model's dtype; returns the output node's
        Tensor: logits (N, num_classes), or features (N, h, w, C) for a headless model.
        ``end_points`` then maps every node name to its activation, or, given ``end_points``
        (node names), only those and the output's.

        In eval mode, when nothing will be recorded for backward (under ``no_grad``, or neither
        ``x`` nor any parameter requires grad), the graph runs through the inference plan
        (see :mod:`npmobilenet.inference`); the results agree to rounding. Naming the end
        points one needs (``model(x, end_points=())`` for the output alone) lets the plan reuse
        every other activation's memory within the call: a fraction of the peak, and faster.
        In a training step it lets backward free each activation once its last gradient is
        computed (held in ``end_points``, all of them live until the step ends).
        """
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        self._check_input(data)
        if end_points is not None:
            end_points = set(end_points)
            unknown = sorted(end_points - {node.name for node in self.graph.nodes})
            if unknown:
                raise ValueError(f"end_points: no nodes named {unknown} in {self.graph.name!r}")
        return self._run(INPUT, x if isinstance(x, Tensor) else Tensor(data), end_points)

    def forward_from(self, endpoint: str, activation) -> Tensor:
        """Run only the nodes after ``endpoint``, given its activation (e.g. cached features)."""
        self.graph.node(endpoint)  # raises KeyError naming an unknown endpoint
        return self._run(endpoint, activation if isinstance(activation, Tensor) else Tensor(activation))

    def _records(self, value: Tensor) -> bool:
        """Whether a forward from ``value`` records anything for backward."""
        return is_grad_enabled() and (value.requires_grad or any(p.requires_grad for p in self._params.values()))

    def _run(self, start: str, value: Tensor, keep: set[str] | None = None) -> Tensor:
        # Drop the previous call's activations first: kept until the end of this call they
        # would double the peak memory of a training step (and the plan could not reuse them).
        self.end_points = {}
        if self._records(value):
            self._plan = None  # an optimizer step may follow: the folded weights would be stale
        elif self.fast_inference and not self.training:
            return self._run_plan(start, value.data, keep)
        output = self._run_ops(start, value)
        if keep is not None:
            self.end_points = {name: t for name, t in self.end_points.items()
                               if name in keep or name == self.graph.output}
        return output

    def _run_plan(self, start: str, data: np.ndarray, keep: set[str] | None) -> Tensor:
        if self._plan is None:
            arrays = {name: p.data for name, p in self._params.items()}
            self._plan = InferencePlan(self.graph, {**arrays, **self._buffers}, self._forward_node)
        with no_grad():
            values = self._plan(data, start, keep)
        self.end_points = {name: Tensor(value) for name, value in values.items()}
        return self.end_points[self.graph.output]

    def _forward_node(self, node, *inputs) -> Tensor:
        return KINDS[node.op].forward(self, node, *inputs)

    def _run_ops(self, start: str, value: Tensor) -> Tensor:
        values = {start: value}
        names = [node.name for node in self.graph.nodes]
        first = 0 if start == INPUT else names.index(start) + 1
        tracer = tracing.ACTIVE  # an active trace labels each op with the node running it
        for node in self.graph.nodes[first:]:
            if tracer is not None:
                tracer.node = node.name
            values[node.name] = self._forward_node(node, *(values[i] for i in node.inputs))
        if tracer is not None:
            tracer.node = None
        values.pop(INPUT, None)
        self.end_points = values
        return values[self.graph.output]

    def _check_input(self, data: np.ndarray) -> None:
        channels = self.graph.input_shape[2]
        if data.ndim != 4 or data.shape[3] != channels:
            raise ValueError(f"x: expected NHWC images (N, H, W, {channels}), got shape {data.shape}")
        if data.dtype != self.dtype:
            raise ValueError(f"x: dtype {data.dtype} differs from the model's {self.dtype}; "
                             f"convert it with .astype(np.{self.dtype.name})")
        low = self.graph.min_input_size
        if data.shape[1] < low[0] or data.shape[2] < low[1]:
            raise ValueError(f"x: images of {data.shape[1]}x{data.shape[2]} are smaller than the "
                             f"network's total stride allows (at least {low[0]}x{low[1]})")
        memory.require(f"a {'training' if self.training else 'inference'} pass over x of shape "
                       f"{data.shape}", self._activation_bytes(data.shape))
        if self.training and not np.isfinite(data).all():
            # One NaN would turn every batch-norm moving statistic into NaN for good.
            image = int(np.flatnonzero(~np.isfinite(data).reshape(len(data), -1).all(axis=1))[0])
            raise ValueError(f"x: image {image} of the batch holds NaN or infinity; refused in "
                             f"training mode before it reached any moving statistic")

    def _activation_bytes(self, shape: tuple[int, ...]) -> int:
        """Estimated bytes of one pass's activations: every node's output for the batch, three
        times over when training (the saved activation, its gradient, the kernels' scratch)."""
        height, width = shape[1] / self.graph.input_shape[0], shape[2] / self.graph.input_shape[1]
        per_image = self._activations_per_image * height * width
        return int(per_image * shape[0] * self.dtype.itemsize * (3 if self.training else 1))

    @contextmanager
    def keyed_dropout(self, seed: int, epoch: int, indices):
        """Within the block, the dropout mask of batch row ``i`` is drawn from ``(seed, epoch,
        indices[i], node)`` alone (``indices``: the rows' sample indices in the data set), not
        from ``dropout_rng``: a trainer's masks then need no saved generator state to resume,
        and a row gets the same mask in any batch on any process (data-parallel training)."""
        self._dropout_key = (seed, epoch, np.asarray(indices, np.int64))
        try:
            yield self
        finally:
            self._dropout_key = None

    def dropout_keys(self, node) -> list[list[int]] | None:
        """The per-row keys of ``node``'s dropout mask under :meth:`keyed_dropout`, else None."""
        if self._dropout_key is None:
            return None
        seed, epoch, indices = self._dropout_key
        ordinal = next(i for i, n in enumerate(self.graph.nodes) if n.name == node.name)
        return [[seed, epoch, int(index), DROPOUT_STREAM, ordinal] for index in indices]

    def train(self, mode: bool = True) -> "Model":
        """Training mode: batch statistics (moving statistics updated), dropout active."""
        self.training = bool(mode)
        self._plan = None  # refolded at the next eval-mode call: parameters may have changed
        return self

    def eval(self) -> "Model":
        """Inference mode: moving statistics, no dropout."""
        return self.train(False)

    def freeze(self, trainable: tuple[str, ...] = ("Logits",)) -> "Model":
        """Freeze every node except those named in ``trainable``: their parameters get no
        gradient computed and their batch norms use, and keep, the moving statistics even in
        training mode (fine-tuning a pretrained backbone)."""
        unknown = [name for name in trainable if name not in {n.name for n in self.graph.nodes}]
        if unknown:
            raise ValueError(f"trainable: no node named {unknown} in {self.graph.name}")
        self.frozen = {node.name for node in self.graph.nodes if node.name not in trainable}
        for node in self.graph.nodes:
            for key in node.param_shapes:
                self.param(node, key).requires_grad = node.name not in self.frozen
        return self

    def unfreeze(self) -> "Model":
        """Make every parameter trainable again (fine-tuning the whole network)."""
        self.frozen = set()
        for param in self._params.values():
            param.requires_grad = True
        return self

    # -- parameters ------------------------------------------------------------------------
    def param(self, node, key: str) -> Tensor:
        return self._params[f"{node.name}/{key}"]

    def buffer(self, node, key: str) -> np.ndarray:
        return self._buffers[f"{node.name}/{key}"]

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        return iter(self._params.items())

    def parameters(self) -> list[Tensor]:
        return list(self._params.values())

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        return iter(self._buffers.items())

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.data.size for p in self._params.values())

    def summary(self) -> str:
        """Print the per-layer table (output shapes, parameters trainable and frozen, parameter
        and activation memory, MACs; see :meth:`Graph.summary`) and return it as a string."""
        frozen = {name for name, p in self._params.items() if not p.requires_grad}
        text = self.graph.summary(frozen, self.dtype)
        print(text)
        return text

    def zero_grad(self) -> None:
        for p in self._params.values():
            p.grad = None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters then buffers, name -> a copy of the array."""
        out = {name: p.data.copy() for name, p in self._params.items()}
        out.update((name, b.copy()) for name, b in self._buffers.items())
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> LoadResult:
        """Copy arrays into the model (cast to its dtype).

        Raises ValueError listing every mis-shaped key, and with ``strict`` also every missing
        and unexpected key; ValueError naming a tensor that holds NaN or infinity once cast
        (1e300 is infinite in float32) or a negative moving variance. Nothing is changed when
        it raises. Returns the missing and unexpected keys.
        """
        targets = {name: p.data for name, p in self._params.items()}
        targets.update(self._buffers)
        missing = [name for name in targets if name not in state]
        unexpected = [name for name in state if name not in targets]
        misshaped = [f"{name}: expected {targets[name].shape}, got {np.shape(state[name])}"
                     for name in targets if name in state and np.shape(state[name]) != targets[name].shape]
        problems = [f"mis-shaped keys: {'; '.join(misshaped)}"] if misshaped else []
        if strict and missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if problems:
            raise ValueError("state_dict: " + "\n  ".join(problems))
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing cast is refused below
            values = {name: np.asarray(state[name], dtype=self.dtype) for name in targets if name in state}
        check_state_values(values)
        for name, value in values.items():
            targets[name][...] = value
        self._plan = None
        return LoadResult(missing, unexpected)

    def __repr__(self) -> str:
        frozen = sum(p.data.size for p in self._params.values() if not p.requires_grad)
        return (f"Model({self.graph.name!r}, {len(self.graph.nodes)} nodes, "
                f"{self.num_parameters() - frozen:,} trainable + {frozen:,} frozen parameters, "
                f"{self.dtype.name}, {'train' if self.training else 'eval'})")


def build_model(spec_or_name, *, dtype=np.float32, seed=None, **options) -> Model:
    """Build a model from a spec (built-in name, JSON path or dict) and build options.

    Options are those of :func:`npmobilenet.architecture.build_graph` (depth_multiplier, min_depth,
    input_size, num_classes, output_stride, padding, activation, bn_eps, bn_momentum, dropout,
    global_pool, final_endpoint, init, ...); ``seed`` seeds the initialiser and dropout.
    """
    spec = load_spec(spec_or_name)
    resolved = resolve_options(spec, **options)
    graph = expand(spec, resolved)
    # The initialiser draws in float64 and the model keeps a copy: ~3 float64 copies at the peak.
    entries = sum(int(np.prod(shape)) for shape in [*graph.parameter_shapes().values(),
                                                    *graph.buffer_shapes().values()])
    memory.require(f"building {graph.name}'s {entries:,} parameters", 3 * 8 * entries)
    init_seed, dropout_seed = np.random.SeedSequence(seed).spawn(2)
    params, buffers = init_parameters(graph, resolved.init, init_seed, dtype)
    model = Model(graph, params, buffers, dtype=dtype, seed=dropout_seed)
    model.spec = spec
    return model


__all__ = ["LoadResult", "Model", "build_model"]

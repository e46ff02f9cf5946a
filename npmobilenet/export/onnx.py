"""Export a model to ONNX: a standard-opset graph a deployment runtime (onnxruntime, TensorRT,
OpenVINO, ...) reads.

The graph is built node by node from the node-kind table: each kind's ``onnx`` hook (see
:mod:`npmobilenet.kinds`) writes its operators, batch norm folded into the convolutions as the
inference plan folds it. Inside, tensors are NCHW; the input is ``(N, 3, H, W)`` (``layout
"nchw"``) or ``(N, H, W, 3)`` (``"nhwc"``, transposed once at the start), with a dynamic batch
dimension and the model's input size (or ``input_size``). The output is the logits ``(N,
classes)``, or a headless model's features. The model's class names, preprocessing preset,
spec and options are stored in ``metadata_props`` as JSON. The graph is float32 (what runtimes
run): a float64 model's weights are rounded to float32.

``onnx`` is imported here only, when an export runs.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from ..architecture import build_graph
from ..architecture.graph import INPUT
from ..io.model_file import _umask
from ..kinds import KINDS

__all__ = ["OPSET", "LAYOUTS", "OnnxGraph", "export_onnx"]

OPSET = 17
LAYOUTS = ("nchw", "nhwc")


class OnnxGraph:
    """What a kind's ``onnx`` hook writes into: ONNX nodes and initializers, the tensor name of
    every graph node's output, and the node's arrays and input size."""

    def __init__(self, graph, arrays: dict[str, np.ndarray], dtype=np.float32):
        from onnx import helper

        self._helper = helper
        self.graph = graph
        self.arrays = arrays
        self.dtype = np.dtype(dtype)
        self.nodes: list = []
        self.initializers: list = []
        self.outputs: dict[str, str] = {}
        self._shapes = {node.name: node.out_shape for node in graph.nodes}
        self._count = 0

    # -- what a hook reads ----------------------------------------------------------------
    def input(self, node, index: int = 0) -> str:
        """The tensor name of the node's ``index``-th input."""
        return self.outputs[node.inputs[index]]

    def in_hw(self, node, index: int = 0) -> tuple[int, int]:
        """The spatial size of the node's input at the exported input size."""
        source = node.inputs[index]
        shape = self.graph.input_shape if source == INPUT else self._shapes[source]
        return shape[0], shape[1]

    def param(self, node, key: str) -> np.ndarray:
        return self.arrays[f"{node.name}/{key}"]

    # -- what a hook writes ---------------------------------------------------------------
    def constant(self, node, key: str, value: np.ndarray) -> str:
        """An initializer named ``<node>/<key>`` holding ``value`` (in the graph's dtype)."""
        from onnx import numpy_helper

        name = f"{node.name}/{key}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, self.dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        """Append an operator; returns its (one) output's name."""
        self._count += 1
        output = f"{op_type}_{self._count}"
        self.nodes.append(self._helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def activation(self, name: str | None, x: str) -> str:
        """The activations table (:mod:`npmobilenet.activations`) as ONNX operators."""
        if name in (None, "identity"):
            return x
        if name == "relu":
            return self.op("Relu", [x])
        if name == "relu6":
            bounds = [self._scalar(0.0), self._scalar(6.0)]
            return self.op("Clip", [x, *bounds])
        if name == "hard_sigmoid":
            return self.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)
        if name == "hard_swish":
            return self.op("HardSwish", [x])
        raise ValueError(f"activation {name!r} has no ONNX form")

    def _scalar(self, value: float) -> str:
        from onnx import numpy_helper

        name = f"const_{value:g}"
        if not any(t.name == name for t in self.initializers):
            self.initializers.append(numpy_helper.from_array(np.asarray(value, self.dtype), name))
        return name


def _export_graph(model, input_size):
    """The model's graph, rebuilt at ``input_size`` when given (the weights' shapes do not
    depend on it)."""
    if input_size is None:
        return model.graph
    options = {**model.graph.options.to_dict(), "input_size": list(input_size)}
    return build_graph(model.spec if model.spec is not None else model.graph.name, **options)


def to_onnx(model, layout: str = "nchw", input_size: tuple[int, int] | None = None):
    """The model as an ``onnx.ModelProto`` (see the module docstring).

    Raises ValueError for an unknown layout, a node kind without an ``onnx`` hook, or a slim
    pool that does not fit the input size.
    """
    from onnx import TensorProto, helper

    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    graph = _export_graph(model, input_size)
    g = OnnxGraph(graph, model.state_dict())
    h, w, c = graph.input_shape
    shape = ["N", c, h, w] if layout == "nchw" else ["N", h, w, c]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)]
    g.outputs[INPUT] = "input" if layout == "nchw" else g.op("Transpose", ["input"], perm=[0, 3, 1, 2])
    for node in graph.nodes:
        kind = KINDS[node.op]
        if kind.onnx is None:
            raise ValueError(f"node {node.name!r}: node kind {node.op!r} has no ONNX exporter")
        g.outputs[node.name] = kind.onnx(node, g)
    last = graph.nodes[-1]
    result = g.outputs[last.name]
    out_shape = list(last.out_shape)
    if len(out_shape) == 3:  # a headless model's feature map: (N, C, h, w) inside
        if layout == "nhwc":
            result = g.op("Transpose", [result], perm=[0, 2, 3, 1])
        else:
            out_shape = [out_shape[2], *out_shape[:2]]
    name = "logits" if graph.options.num_classes else "features"
    g.nodes.append(helper.make_node("Identity", [result], [name], name="output"))
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *out_shape])]
    onnx_graph = helper.make_graph(g.nodes, graph.name, inputs, outputs, g.initializers)
    proto = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="npmobilenet")
    metadata = {"classes": model.class_names, "preprocess": model.preprocess, "layout": layout,
                "spec": model.spec, "options": graph.options.to_dict()}
    helper.set_model_props(proto, {key: json.dumps(value) for key, value in metadata.items()})
    return proto


def export_onnx(model, path: os.PathLike | str, layout: str = "nchw",
                input_size: tuple[int, int] | None = None) -> None:
    """Write the model as ONNX to ``path`` (atomically, after ``onnx.checker`` with full checking
    passed).

    Raises ImportError naming the extra to install when onnx is missing; ValueError as
    :func:`to_onnx`, or for a graph the checker refuses.
    """
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'npmobilenet[onnx]'") from None
    proto = to_onnx(model, layout, input_size)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ValueError(f"the exported graph fails onnx.checker: {error}") from None
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(proto.SerializeToString())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600; files follow the umask
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise

"""Convert torchvision and Keras MobileNet weights into npmobilenet models.

For each node of our graph, :mod:`.naming` says where the source framework keeps it (name
prefixes) and the node's kind says how its tensors are named under those prefixes and laid out
(:attr:`npmobilenet.kinds.NodeKind.sources`). Each source also has the build options that
reproduce its arithmetic:

============  ===========  ======  =================================================  ==========
source        arch         bn eps  padding                                            preprocess
============  ===========  ======  =================================================  ==========
torchvision   mobilenet_v2 1e-5    symmetric (torch)                                  torchvision
keras         mobilenet_v1 1e-3    TF SAME; stride-2 depthwise ((0, 1), (0, 1))       keras
keras         mobilenet_v2 1e-3    TF SAME (``correct_pad`` on a static input size)   keras
============  ===========  ======  =================================================  ==========

The number of classes comes from the file. Without ``depth_multiplier``, the first of the usual
multipliers whose graph has exactly the file's tensor shapes is used.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..architecture import build_graph, load_spec
from ..kinds import KINDS, SourceLayout
from ..model import Model
from ..validate import check_state_values
from . import naming
from .keras_h5 import read_keras_h5
from .labels import class_names
from .preprocess import preset
from .safetensors_weights import read_safetensors
from .torch_pickle import read_torch_state_dict

__all__ = ["SOURCES", "ARCHS", "convert_file", "convert_state"]

SOURCES = ("torchvision", "keras", "timm")
ARCHS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
         "mobilenet_v3_large_minimalistic", "mobilenet_v3_small_minimalistic",
         "mobilenet_v4_conv_small")
MULTIPLIERS = (1.0, 0.75, 0.5, 0.35, 0.25, 1.3, 1.4)


@dataclass(frozen=True)
class _Source:
    """One framework's model of one architecture: its tensor names and its arithmetic."""

    convention: str  # the naming convention of the node kinds' ``sources``: "torch" or "keras"
    naming: Callable  # graph -> {node name: the framework's name prefixes}
    options: dict  # build options that reproduce the source's arithmetic
    preprocess: str
    classifier_bias: str  # gives the number of classes
    adapt_spec: Callable[[dict], dict] | None = None  # the framework's own width rules


def keras_v3_widths(spec: dict) -> dict:
    """Keras's MobileNetV3 widths: the stem keeps 16 channels whatever alpha, each bottleneck
    expands by a ratio of its actual input (``_depth(infilters * expansion)``, the paper's
    expanded width over its input width), and the hidden layer is scaled only above alpha 1."""
    spec = copy.deepcopy(spec)
    stem, *rows = spec["body"]
    stem["scaled"] = False
    width = stem["depth"]
    for row in rows:
        if row["type"] == "InvertedResidual":
            row["t"] = row.pop("exp") / width
            width = row["c"]
    hidden = spec["head"]["hidden"]
    hidden["min_multiplier"] = 1.0
    return spec


_TORCHVISION = {"padding": "symmetric", "bn_eps": 1e-5, "bn_momentum": 0.1, "dropout": 0.2,
                "global_pool": True}
SOURCE_MODELS = {
    ("torchvision", "mobilenet_v2"): _Source("torch", naming.torchvision_v2, _TORCHVISION,
                                             "torchvision", "classifier.1.bias"),
    # Keras v1: int(depth * alpha) with no minimum, GAP head, momentum 0.99
    ("keras", "mobilenet_v1"): _Source(
        "keras", naming.keras_v1, {"padding": "keras", "bn_eps": 1e-3, "bn_momentum": 0.01,
                                   "dropout": 0.001, "global_pool": True, "min_depth": 1},
        "keras", "conv_preds/bias"),
    ("keras", "mobilenet_v2"): _Source(
        "keras", naming.keras_v2, {"padding": "SAME", "bn_eps": 1e-3, "bn_momentum": 0.001,
                                   "dropout": 0.0, "global_pool": True},
        "keras", "predictions/bias"),
    **{("torchvision", arch): _Source("torch", naming.torchvision_v3,
                                      {**_TORCHVISION, "bn_eps": 1e-3, "bn_momentum": 0.01},
                                      "torchvision", "classifier.3.bias")
       for arch in ("mobilenet_v3_large", "mobilenet_v3_small")},
    **{("keras", arch): _Source("keras", naming.keras_v3,
                                {"padding": "keras", "bn_eps": 1e-3, "bn_momentum": 0.001,
                                 "dropout": 0.2, "global_pool": True},
                                "keras", "logits/bias", keras_v3_widths)
       for arch in ("mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v3_large_minimalistic",
                    "mobilenet_v3_small_minimalistic")},
    ("timm", "mobilenet_v4_conv_small"): _Source(
        "torch", naming.timm_v4((2, 2, 6, 6, 1)),
        {"padding": "symmetric", "bn_eps": 1e-5, "bn_momentum": 0.1, "global_pool": True},
        "torchvision", "classifier.bias"),
}


def _plan(source: _Source, graph) -> dict[str, tuple[str, SourceLayout]]:
    """Our state-dict key -> (source tensor name, layout), for every key of the graph."""
    plan, places = {}, source.naming(graph)
    for node in graph.nodes:
        keys = [*node.layout.params, *node.layout.buffers]
        if not keys:
            continue
        prefixes = places.get(node.name)
        if prefixes is None:
            raise ValueError(f"the source has no counterpart of node {node.name!r}")
        names = KINDS[node.op].sources[source.convention]
        for key in keys:
            template, layout = names[key]
            plan[f"{node.name}/{key}"] = (template.format(**prefixes), layout)
    return plan


def _flatten_keras(layers: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``{layer: {var: a}}`` -> ``{"layer/var": a}``, Keras 2's ``depthwise_kernel`` as ``kernel``."""
    flat = {}
    for layer, variables in layers.items():
        for var, value in variables.items():
            flat[f"{layer}/{'kernel' if var == 'depthwise_kernel' else var}"] = value
    return flat


def _num_classes(source: _Source, name: str, tensors: Mapping[str, np.ndarray]) -> int:
    if source.classifier_bias not in tensors:
        raise ValueError(f"missing tensor {source.classifier_bias!r} (the classifier's bias, which "
                         f"gives the number of classes): is this a {name} file with its top?")
    return int(np.shape(tensors[source.classifier_bias])[0])


def _mismatches(plan, param_shapes, tensors) -> list[str]:
    problems = []
    for key, (name, layout) in plan.items():
        accepted = layout.source_shapes(tuple(param_shapes[key]))
        if name not in tensors:
            problems.append(f"missing tensor {name!r} (for {key}, expected shape {accepted[0]})")
        elif tuple(np.shape(tensors[name])) not in accepted:
            problems.append(f"tensor {name!r} (for {key}): expected shape {accepted[0]}, "
                            f"found {tuple(np.shape(tensors[name]))}")
    return problems


def convert_state(source: str, arch: str, tensors: Mapping[str, np.ndarray],
                  depth_multiplier: float | None = None, dtype=np.float32) -> Model:
    """Build the model matching ``tensors`` (source names and layouts) and load them into it.

    Parameters
    ----------
    source : "torchvision" or "keras"
    arch : "mobilenet_v1" or "mobilenet_v2"
    tensors : source tensor name -> ndarray (Keras: ``"layer/variable"``)
    depth_multiplier : float or None (None: inferred from the shapes)
    dtype : float32 or float64

    Returns an eval-mode Model with ``preprocess`` set to the source's preset. Raises ValueError
    naming each missing tensor or each tensor whose shape differs (expected vs found, in the
    source's layout), any source tensor left unused, and a tensor holding NaN or infinity or a
    negative moving variance.
    """
    if source not in SOURCES:
        raise ValueError(f"source: expected one of {SOURCES}, got {source!r}")
    if arch not in ARCHS:
        raise ValueError(f"arch: expected one of {ARCHS}, got {arch!r}")
    if (source, arch) not in SOURCE_MODELS:
        offered = ", ".join(a for s, a in SOURCE_MODELS if s == source)
        raise ValueError(f"arch: {source} has no {arch} (it offers {offered})")
    check_state_values(tensors)
    model_source = SOURCE_MODELS[(source, arch)]
    options = {**model_source.options,
               "num_classes": _num_classes(model_source, f"{source} {arch}", tensors)}
    spec = load_spec(arch)
    if model_source.adapt_spec is not None:
        spec = model_source.adapt_spec(spec)
    candidates = MULTIPLIERS if depth_multiplier is None else (depth_multiplier,)
    first_problems = None
    for alpha in candidates:
        graph = build_graph(spec, depth_multiplier=alpha, **options)
        shapes = {**graph.parameter_shapes(), **graph.buffer_shapes()}
        plan = _plan(model_source, graph)
        problems = _mismatches(plan, shapes, tensors)
        if not problems:
            break
        first_problems = first_problems or (alpha, problems)
    else:
        alpha, problems = first_problems
        tried = (f"depth_multiplier {alpha}" if depth_multiplier is not None
                 else f"no usual depth multiplier ({', '.join(map(str, MULTIPLIERS))}) fits; "
                      f"with {alpha}")
        shown = "\n  ".join(problems[:10] + ([f"... {len(problems) - 10} more"] if len(problems) > 10 else []))
        raise ValueError(f"the {source} file does not match {arch} ({tried}):\n  {shown}")
    used = {name for name, _ in plan.values()}
    unused = sorted(n for n in tensors if n not in used and not n.endswith("num_batches_tracked"))
    if unused:
        raise ValueError(f"the {source} file has tensors that {arch} (depth_multiplier {alpha}) "
                         f"does not use: {', '.join(unused[:10])}")
    # The graph that matched holds the converted weights directly: no random weights drawn first.
    ours = {key: layout.to_ours(np.asarray(tensors[name])) for key, (name, layout) in plan.items()}
    params = graph.parameter_shapes()
    model = Model(graph, {key: value for key, value in ours.items() if key in params},
                  {key: value for key, value in ours.items() if key not in params}, dtype=dtype)
    model.spec = spec
    model.preprocess = preset(model_source.preprocess)
    if options["num_classes"] in (1000, 1001):  # ImageNet heads: the names travel in the file
        model.class_names = class_names(options["num_classes"])
    return model.eval()


def convert_file(source: str, arch: str, path: os.PathLike | str,
                 depth_multiplier: float | None = None, dtype=np.float32) -> Model:
    """Read a torchvision or timm ``.pth`` (timm also ``.safetensors``) or a Keras ``.h5`` file and
    convert it (see :func:`convert_state`).

    Raises FileNotFoundError, or ValueError naming the file for a file that cannot be read
    safely (see :func:`~npmobilenet.io.read_torch_state_dict`, :func:`~npmobilenet.io.read_keras_h5`)
    or does not match the architecture.
    """
    if source == "timm" and str(path).endswith(".safetensors"):
        tensors = read_safetensors(path)
    elif source in ("torchvision", "timm"):
        tensors = read_torch_state_dict(path)
    elif source == "keras":
        tensors = _flatten_keras(read_keras_h5(path))
    else:
        raise ValueError(f"source: expected one of {SOURCES}, got {source!r}")
    try:
        return convert_state(source, arch, tensors, depth_multiplier, dtype)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None

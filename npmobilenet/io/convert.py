"""Convert torchvision and Keras MobileNet weights into npmobilenet models.

Each source has a naming table from our graph's node names (docs/architecture.md) to the source's
tensor names, and a layout transform per tensor kind (ours: HWIO convolutions, ``(kh, kw, C, 1)``
depthwise, ``(in, out)`` logits), plus the build options that reproduce the source's arithmetic:

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

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..model import Model
from ..spec import build_graph, load_spec
from ..validate import check_state_values
from .keras_h5 import read_keras_h5
from .preprocess import preset
from .torch_pickle import read_torch_state_dict

__all__ = ["SOURCES", "ARCHS", "convert_file", "convert_state"]

SOURCES = ("torchvision", "keras")
ARCHS = ("mobilenet_v1", "mobilenet_v2")
MULTIPLIERS = (1.0, 0.75, 0.5, 0.35, 0.25, 1.3, 1.4)


@dataclass(frozen=True)
class _Layout:
    """Turns a source tensor into ours; ``source_shape`` gives the shape it must have."""

    to_ours: Callable[[np.ndarray], np.ndarray]
    source_shape: Callable[[tuple], tuple]


def _permute(axes: tuple[int, ...]) -> _Layout:
    inverse = tuple(int(i) for i in np.argsort(axes))
    return _Layout(lambda a: np.transpose(a, axes), lambda ours: tuple(ours[i] for i in inverse))


_SAME = _Layout(lambda a: a, lambda ours: ours)
_TORCH_CONV = _permute((2, 3, 1, 0))  # (O, I, kh, kw) -> (kh, kw, I, O)
_TORCH_DEPTHWISE = _permute((2, 3, 0, 1))  # (C, 1, kh, kw) -> (kh, kw, C, 1)
_TORCH_LINEAR = _permute((1, 0))  # (out, in) -> (in, out)
_KERAS_1X1_LOGITS = _Layout(lambda a: a.reshape(a.shape[-2:]), lambda ours: (1, 1, *ours))

_BN_TORCH = {"BatchNorm/gamma": "weight", "BatchNorm/beta": "bias",
             "BatchNorm/moving_mean": "running_mean", "BatchNorm/moving_variance": "running_var"}
_BN_KERAS = {"BatchNorm/gamma": "gamma", "BatchNorm/beta": "beta",
             "BatchNorm/moving_mean": "moving_mean", "BatchNorm/moving_variance": "moving_variance"}


def _torchvision_v2_names(node: str) -> tuple[str, str] | None:
    """Our v2 node -> (torchvision conv prefix, its batch-norm prefix)."""
    if node == "Conv":
        return "features.0.0", "features.0.1"
    if node == "Conv_1":
        return "features.18.0", "features.18.1"
    match = re.fullmatch(r"expanded_conv(?:_(\d+))?/(expand|depthwise|project)", node)
    if match is None:
        return None
    block, part = int(match.group(1) or 0) + 1, match.group(2)
    if block == 1:  # no expansion: conv.0 = depthwise ConvBNReLU, conv.1 = project, conv.2 = BN
        index = {"depthwise": ("conv.0.0", "conv.0.1"), "project": ("conv.1", "conv.2")}[part]
    else:
        index = {"expand": ("conv.0.0", "conv.0.1"), "depthwise": ("conv.1.0", "conv.1.1"),
                 "project": ("conv.2", "conv.3")}[part]
    return f"features.{block}.{index[0]}", f"features.{block}.{index[1]}"


def _keras_v1_names(node: str) -> tuple[str, str] | None:
    if node == "Conv2d_0":
        return "conv1", "conv1_bn"
    match = re.fullmatch(r"Conv2d_(\d+)_(depthwise|pointwise)", node)
    if match is None:
        return None
    layer = f"conv_{'dw' if match.group(2) == 'depthwise' else 'pw'}_{match.group(1)}"
    return layer, f"{layer}_bn"


def _keras_v2_names(node: str) -> tuple[str, str] | None:
    if node in ("Conv", "Conv_1"):
        return ("Conv1", "bn_Conv1") if node == "Conv" else ("Conv_1", "Conv_1_bn")
    match = re.fullmatch(r"expanded_conv(?:_(\d+))?/(expand|depthwise|project)", node)
    if match is None:
        return None
    prefix = f"block_{match.group(1)}_" if match.group(1) else "expanded_conv_"
    return prefix + match.group(2), f"{prefix}{match.group(2)}_BN"


def _plan(source: str, arch: str, shapes: Mapping[str, tuple]) -> dict[str, tuple[str, _Layout]]:
    """Our state-dict key -> (source tensor name, layout), for every key of the graph."""
    naming = {("torchvision", "mobilenet_v2"): _torchvision_v2_names,
              ("keras", "mobilenet_v1"): _keras_v1_names,
              ("keras", "mobilenet_v2"): _keras_v2_names}[(source, arch)]
    plan = {}
    for key in shapes:
        if key.startswith("Logits/"):
            param = key.split("/")[1]
            if source == "torchvision":
                plan[key] = (f"classifier.1.{'weight' if param == 'weights' else 'bias'}",
                             _TORCH_LINEAR if param == "weights" else _SAME)
            else:
                layer = "conv_preds" if arch == "mobilenet_v1" else "predictions"
                kernel_layout = _KERAS_1X1_LOGITS if arch == "mobilenet_v1" else _SAME
                plan[key] = (f"{layer}/{'kernel' if param == 'weights' else 'bias'}",
                             kernel_layout if param == "weights" else _SAME)
            continue
        # "{node}/weights" or "{node}/BatchNorm/{stat}", where node may itself contain "/"
        node, _, param = key.partition("/BatchNorm/") if "/BatchNorm/" in key else key.rpartition("/")
        names = naming(node)
        if names is None:
            raise ValueError(f"no {source} name for {key!r}")
        conv, bn = names
        if param != "weights":
            bn_key = f"BatchNorm/{param}"
            if source == "torchvision":
                plan[key] = (f"{bn}.{_BN_TORCH[bn_key]}", _SAME)
            else:
                plan[key] = (f"{bn}/{_BN_KERAS[bn_key]}", _SAME)
        elif source == "torchvision":
            layout = _TORCH_DEPTHWISE if node.endswith("depthwise") else _TORCH_CONV
            plan[key] = (f"{conv}.weight", layout)
        else:
            plan[key] = (f"{conv}/kernel", _SAME)
    return plan


def _flatten_keras(layers: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``{layer: {var: a}}`` -> ``{"layer/var": a}``, Keras 2's ``depthwise_kernel`` as ``kernel``."""
    flat = {}
    for layer, variables in layers.items():
        for var, value in variables.items():
            flat[f"{layer}/{'kernel' if var == 'depthwise_kernel' else var}"] = value
    return flat


def _build_options(source: str, arch: str) -> dict:
    if source == "torchvision":
        return {"padding": "symmetric", "bn_eps": 1e-5, "bn_momentum": 0.1, "dropout": 0.2,
                "global_pool": True}
    if arch == "mobilenet_v1":  # Keras: int(depth * alpha) with no minimum, GAP head, momentum 0.99
        return {"padding": "keras", "bn_eps": 1e-3, "bn_momentum": 0.01, "dropout": 0.001,
                "global_pool": True, "min_depth": 1}
    return {"padding": "SAME", "bn_eps": 1e-3, "bn_momentum": 0.001, "dropout": 0.0,
            "global_pool": True}


def _num_classes(source: str, arch: str, tensors: Mapping[str, np.ndarray]) -> int:
    name = {"torchvision": "classifier.1.bias", "keras": "conv_preds/bias"
            if arch == "mobilenet_v1" else "predictions/bias"}[source]
    if name not in tensors:
        raise ValueError(f"missing tensor {name!r} (the classifier's bias, which gives the number "
                         f"of classes): is this a {source} {arch} file with its top?")
    return int(np.shape(tensors[name])[0])


def _mismatches(plan, param_shapes, tensors) -> list[str]:
    problems = []
    for key, (name, layout) in plan.items():
        expected = layout.source_shape(tuple(param_shapes[key]))
        if name not in tensors:
            problems.append(f"missing tensor {name!r} (for {key}, expected shape {expected})")
        elif tuple(np.shape(tensors[name])) != expected:
            problems.append(f"tensor {name!r} (for {key}): expected shape {expected}, "
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
    if (source, arch) == ("torchvision", "mobilenet_v1"):
        raise ValueError("arch: torchvision has no MobileNet v1; use --arch mobilenet_v2")
    check_state_values(tensors)
    spec = load_spec(arch)
    options = {**_build_options(source, arch), "num_classes": _num_classes(source, arch, tensors)}
    candidates = MULTIPLIERS if depth_multiplier is None else (depth_multiplier,)
    first_problems = None
    for alpha in candidates:
        graph = build_graph(spec, depth_multiplier=alpha, **options)
        shapes = {**graph.parameter_shapes(), **graph.buffer_shapes()}
        plan = _plan(source, arch, shapes)
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
    model.preprocess = preset("torchvision" if source == "torchvision" else "keras")
    return model.eval()


def convert_file(source: str, arch: str, path: os.PathLike | str,
                 depth_multiplier: float | None = None, dtype=np.float32) -> Model:
    """Read a torchvision ``.pth`` or Keras ``.h5`` file and convert it (see :func:`convert_state`).

    Raises FileNotFoundError, or ValueError naming the file for a file that cannot be read
    safely (see :func:`~npmobilenet.io.read_torch_state_dict`, :func:`~npmobilenet.io.read_keras_h5`)
    or does not match the architecture.
    """
    if source == "torchvision":
        tensors = read_torch_state_dict(path)
    elif source == "keras":
        tensors = _flatten_keras(read_keras_h5(path))
    else:
        raise ValueError(f"source: expected one of {SOURCES}, got {source!r}")
    try:
        return convert_state(source, arch, tensors, depth_multiplier, dtype)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None

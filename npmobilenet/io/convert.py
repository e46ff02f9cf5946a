"""Convert torchvision, timm, Keras and TF-slim MobileNet weights into npmobilenet models.

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
tf-slim       mobilenet_v1 1e-3    TF SAME; slim's reduced 7x7 average pool           slim
tf-slim       mobilenet_v2 1e-3    TF SAME; global pool                               slim
============  ===========  ======  =================================================  ==========

What the file holds decides the rest: the number of classes (the classifier's bias; none means
a headless file, converted to a model returning its globally pooled features, after the v3/v4
hidden layer when the file has it), whether a v3/v4 head has its hidden layer, the depth
multiplier (the usual ones first, then those the tensors' shapes imply) and, for TF-slim's
MobileNetV2, whether ``Conv_1`` keeps 1280 channels below width 1 (``finegrain_classification_mode``).
A Keras transfer-learning model (a ``keras.applications`` base, pooling, dropout and one Dense
classifier) converts with its Dense as the classifier.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..architecture import build_graph, load_spec
from ..kinds import KINDS, SourceLayout
from ..model import Model
from ..validate import check_state_values
from . import naming
from .detect import FORMATS, check_source, guess_arch, torch_source
from .keras_h5 import KerasWeights, read_keras_weights
from .labels import class_names
from .model_file import FORMAT
from .preprocess import preset
from .safetensors_weights import read_safetensors
from .tf_checkpoint import open_checkpoint
from .torch_pickle import read_torch_state_dict

__all__ = ["SOURCES", "ARCHS", "Conversion", "convert", "convert_file", "convert_state"]

SOURCES = ("torchvision", "keras", "timm", "tf-slim")
ARCHS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
         "mobilenet_v3_large_minimalistic", "mobilenet_v3_small_minimalistic",
         "mobilenet_v4_conv_small")
MULTIPLIERS = (1.0, 0.75, 0.5, 0.35, 0.25, 1.3, 1.4)
EMA_SUFFIX = "/ExponentialMovingAverage"


def _as_is(spec: dict) -> list[dict]:
    return [spec]


@dataclass(frozen=True)
class _Source:
    """One framework's model of one architecture: its tensor names and its arithmetic."""

    convention: str  # the naming convention of the node kinds' ``sources``: torch, keras, slim
    naming: Callable  # graph -> {node name: the framework's name prefixes}
    options: dict  # build options that reproduce the source's arithmetic
    preprocess: str
    classifier_bias: str  # gives the number of classes
    variants: Callable[[dict], list[dict]] = _as_is  # the spec(s) under the framework's width rules
    optional_gamma: bool = False  # batch norm may lack its scale (gamma = 1), as slim's default
    strict: bool = True  # tensors the model does not use are an error (else listed as ignored)


def keras_v3_widths(spec: dict) -> list[dict]:
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
    return [spec]


def slim_v2_widths(spec: dict) -> list[dict]:
    """TF-slim's MobileNetV2 keeps ``Conv_1`` at 1280 channels below width 1 only with
    ``finegrain_classification_mode`` (as the published checkpoints); by default it scales."""
    scaled = copy.deepcopy(spec)
    scaled["body"][-1].pop("min_multiplier", None)
    return [spec, scaled]


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
    # TF-slim (mobilenet_v1.py: decay 0.9997, keep_prob 0.999; mobilenet_v2: decay 0.997, 0.8)
    ("tf-slim", "mobilenet_v1"): _Source(
        "slim", naming.slim("MobilenetV1"), {"padding": "SAME", "bn_eps": 1e-3,
                                             "bn_momentum": 0.0003, "dropout": 0.001,
                                             "global_pool": False},
        "slim", "MobilenetV1/Logits/Conv2d_1c_1x1/biases", optional_gamma=True, strict=False),
    ("tf-slim", "mobilenet_v2"): _Source(
        "slim", naming.slim("MobilenetV2"), {"padding": "SAME", "bn_eps": 1e-3,
                                             "bn_momentum": 0.003, "dropout": 0.2,
                                             "global_pool": True},
        "slim", "MobilenetV2/Logits/Conv2d_1c_1x1/biases", slim_v2_widths, optional_gamma=True,
        strict=False),
}


@dataclass
class Conversion:
    """A converted model and what was learnt on the way: the source and architecture (given or
    detected), notes worth telling a user, and the file's tensors the model does not use."""

    model: Model
    source: str
    arch: str
    notes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


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


def _absent_gammas(source: _Source, plan, shapes) -> set[str]:
    """Our gamma keys to fill with ones: all of them, when the source may lack batch-norm scale
    and the file has none."""
    gammas = {key for key in plan if key.endswith("BatchNorm/gamma")}
    if source.optional_gamma and not any(plan[key][0] in shapes for key in gammas):
        return gammas
    return set()


def _mismatches(plan, param_shapes, shapes, skip=frozenset()) -> list[str]:
    problems = []
    for key, (name, layout) in plan.items():
        if key in skip:
            continue
        accepted = layout.source_shapes(tuple(param_shapes[key]))
        if name not in shapes:
            problems.append(f"missing tensor {name!r} (for {key}, expected shape {accepted[0]})")
        elif tuple(shapes[name]) not in accepted:
            problems.append(f"tensor {name!r} (for {key}): expected shape {accepted[0]}, "
                            f"found {tuple(shapes[name])}")
    return problems


def _heads(spec: dict, num_classes: int) -> list[dict]:
    """The head options a file may match: with its hidden layer (v3/v4) or without; a headless
    file (no classifier) ends with the pooled features."""
    hidden = "hidden" in spec.get("head", {})
    return [{"num_classes": num_classes, "pool_features": num_classes == 0, "hidden_layer": h}
            for h in ((True, False) if hidden else (True,))]


def _implied_multipliers(source: _Source, spec: dict, options: dict, shapes) -> list[float]:
    """Multipliers the file's shapes imply: for the widest layers, found / expected channels at
    width 1 (and half a channel more, for floor rounding), most reliable first."""
    try:
        graph = build_graph(spec, depth_multiplier=1.0, **options)
        plan = _plan(source, graph)
    except ValueError:
        return []
    ours = {**graph.parameter_shapes(), **graph.buffer_shapes()}
    pairs = set()
    for key, (name, layout) in plan.items():
        expected = layout.source_shapes(tuple(ours[key]))[0]
        found = tuple(shapes.get(name, ()))
        if len(found) == len(expected):
            pairs.update((e, f) for e, f in zip(expected, found) if e >= 64 and 0 < f != e)
    alphas = []
    for expected, found in sorted(pairs, reverse=True)[:6]:
        for alpha in (found / expected, round(found / expected, 2), (found + 0.5) / expected):
            if alpha not in alphas and alpha not in MULTIPLIERS:
                alphas.append(alpha)
    return alphas


def _match(model_source: _Source, arch: str, options: dict, shapes, depth_multiplier):
    """The first (spec, head options, multiplier) whose graph has exactly the file's tensors:
    returns ``(spec, graph, plan, absent gammas)``; raises ValueError with the first
    candidate's problems when none fits."""
    specs = model_source.variants(load_spec(arch))
    bias = tuple(shapes.get(model_source.classifier_bias, (0,)))
    if len(bias) != 1:
        raise ValueError(f"does not match {arch}: the classifier's bias "
                         f"{model_source.classifier_bias!r} has shape {bias}, expected (classes,)")
    num_classes = int(bias[0])
    first = None
    for variant in specs:
        for head in _heads(variant, num_classes):
            settings = {**options, **head}
            alphas = ((depth_multiplier,) if depth_multiplier is not None else
                      (*MULTIPLIERS, *_implied_multipliers(model_source, variant, settings, shapes)))
            for alpha in alphas:
                try:
                    graph = build_graph(variant, depth_multiplier=alpha, **settings)
                except ValueError as error:
                    first = first or (alpha, [str(error)])
                    continue
                plan = _plan(model_source, graph)
                absent = _absent_gammas(model_source, plan, shapes)
                problems = _mismatches(plan, {**graph.parameter_shapes(), **graph.buffer_shapes()},
                                       shapes, absent)
                if not problems:
                    return variant, graph, plan, absent
                first = first or (alpha, problems)
    alpha, problems = first
    if num_classes == 0:
        problems = [f"missing tensor {model_source.classifier_bias!r} (the classifier's bias; "
                    "without it the file was taken for a headless one)", *problems]
    tried = (f"depth_multiplier {alpha}" if depth_multiplier is not None
             else f"no usual depth multiplier ({', '.join(map(str, MULTIPLIERS))}) nor one its "
                  f"shapes imply fits; with {alpha}")
    shown = "\n  ".join(problems[:10] + ([f"... {len(problems) - 10} more"] if len(problems) > 10 else []))
    raise ValueError(f"does not match {arch} ({tried}):\n  {shown}")


def _convert(source: str, arch: str, shapes: Mapping[str, tuple], load: Callable[[str], np.ndarray],
             depth_multiplier: float | None, dtype) -> tuple[Model, list[str]]:
    """The model built from the graph that matches ``shapes`` (source name -> shape), loaded
    through ``load`` (source name -> ndarray); and the source names it leaves unused."""
    if source not in SOURCES:
        raise ValueError(f"source: expected one of {SOURCES}, got {source!r}")
    if arch not in ARCHS:
        raise ValueError(f"arch: expected one of {ARCHS}, got {arch!r}")
    if (source, arch) not in SOURCE_MODELS:
        offered = ", ".join(a for s, a in SOURCE_MODELS if s == source)
        raise ValueError(f"arch: {source} has no {arch} (it offers {offered})")
    model_source = SOURCE_MODELS[(source, arch)]
    try:
        spec, graph, plan, absent = _match(model_source, arch, model_source.options, shapes,
                                           depth_multiplier)
    except ValueError as error:
        raise ValueError(f"the {source} file {error}") from None
    used = {name for key, (name, _) in plan.items() if key not in absent}
    unused = sorted(n for n in shapes if n not in used and not n.endswith("num_batches_tracked"))
    if unused and model_source.strict:
        alpha = graph.options.depth_multiplier
        raise ValueError(f"the {source} file has tensors that {arch} (depth_multiplier {alpha}) "
                         f"does not use: {', '.join(unused[:10])}")
    values = {name: np.asarray(load(name)) for name in sorted(used)}
    check_state_values(values)
    # The graph that matched holds the converted weights directly: no random weights drawn first.
    ours = {key: (np.ones(graph.parameter_shapes()[key], np.float32) if key in absent
                  else layout.to_ours(values[name])) for key, (name, layout) in plan.items()}
    params = graph.parameter_shapes()
    model = Model(graph, {key: value for key, value in ours.items() if key in params},
                  {key: value for key, value in ours.items() if key not in params}, dtype=dtype)
    model.spec = spec
    model.preprocess = preset(model_source.preprocess)
    if graph.options.num_classes in (1000, 1001):  # ImageNet heads: the names travel in the file
        model.class_names = class_names(graph.options.num_classes)
    return model.eval(), unused


def convert_state(source: str, arch: str, tensors: Mapping[str, np.ndarray],
                  depth_multiplier: float | None = None, dtype=np.float32) -> Model:
    """Build the model matching ``tensors`` (source names and layouts) and load them into it.

    Parameters
    ----------
    source : "torchvision", "keras", "timm" or "tf-slim"
    arch : one of :data:`ARCHS` the source offers
    tensors : source tensor name -> ndarray (Keras: ``"layer/variable"``)
    depth_multiplier : float or None (None: inferred from the shapes)
    dtype : float32 or float64

    Returns an eval-mode Model with ``preprocess`` set to the source's preset; without the
    classifier's tensors, a headless model returning pooled features. Raises ValueError naming
    each missing tensor or each tensor whose shape differs (expected vs found, in the source's
    layout), any source tensor left unused (TF-slim: ignored), and a tensor holding NaN or
    infinity or a negative moving variance.
    """
    shapes = {name: np.shape(value) for name, value in tensors.items()}
    return _convert(source, arch, shapes, tensors.__getitem__, depth_multiplier, dtype)[0]


# -- reading each source's files -------------------------------------------------------------

def _slim_tensors(path, ema: bool, notes: list[str]):
    """A TF checkpoint's model variables under slim's scope (``MobilenetV1/...``, whatever
    scopes enclose it), each read from its ExponentialMovingAverage shadow when ``ema`` and the
    checkpoint has one; returns shapes, a loader and the entries never considered."""
    checkpoint = open_checkpoint(path)
    entries = checkpoint.entries
    stored, skipped, shadows = {}, [], 0
    for name, entry in entries.items():
        match = re.search(r"(?:^|/)(MobilenetV[12]/.*)$", name)
        if name.endswith(EMA_SUFFIX) or match is None or entry.sliced or not entry.dtype_name.startswith("float"):
            skipped.append(name)
            continue
        canonical = match.group(1)
        if canonical in stored:
            raise ValueError(f"{checkpoint.prefix}: both {stored[canonical]!r} and {name!r} are {canonical!r}")
        shadow = name + EMA_SUFFIX
        stored[canonical] = shadow if ema and shadow in entries else name
        shadows += stored[canonical] == shadow
    available = sum(name + EMA_SUFFIX in entries for name in stored.values())
    if shadows:
        notes.append(f"{shadows} variables read from their ExponentialMovingAverage shadows "
                     "(--no-ema for the raw values)")
    elif available:
        notes.append(f"raw variables used; the checkpoint also holds {available} "
                     "ExponentialMovingAverage shadows")
    shapes = {name: entries[source].shape for name, source in stored.items()}
    used_sources = set(stored.values())
    return shapes, lambda name: checkpoint.read(stored[name]), [n for n in skipped if n not in used_sources]


def _config_layers(config) -> list[tuple[int, dict]]:
    """Every layer entry of a Keras model config, with its nesting depth (0: the outer model)."""
    found, stack = [], [(config, -1)]
    while stack:
        model, depth = stack.pop()
        inner = model.get("config") if isinstance(model, dict) else None
        layers = inner.get("layers") if isinstance(inner, dict) else None
        for layer in layers if isinstance(layers, list) else []:
            if isinstance(layer, dict):
                found.append((depth + 1, layer))
                stack.append((layer, depth + 1))
    return found


def _layer_name(layer: dict) -> str:
    config = layer.get("config")
    return str(config.get("name") if isinstance(config, dict) else layer.get("name"))


def _keras_head(weights: KerasWeights, classifier: str, notes: list[str]) -> dict[str, dict]:
    """The file's layers, with a transfer-learning model's Dense classifier renamed to the
    architecture's own classifier layer (``classifier``). The model config, when the file has
    one, is checked for heads that would compute something else (max pooling, flattening,
    activations other than softmax) and read for the Dense's activation; it is never run."""
    layers = dict(weights.layers)
    entries = _config_layers(weights.config) if weights.config is not None else []
    nested = any(depth == 1 for depth, _ in entries)  # a base inside the model: a transfer head
    for depth, layer in entries:
        kind = layer.get("class_name")
        if kind in ("GlobalMaxPooling2D", "MaxPooling2D") or (kind == "Flatten" and depth == 0 and nested):
            raise ValueError(f"the model pools its features with {kind} {_layer_name(layer)!r}; "
                             "npmobilenet's heads average them (GlobalAveragePooling2D), so the "
                             "result would differ")
    if classifier in layers:
        return layers
    dense = [name for name, v in layers.items()
             if set(v) == {"kernel", "bias"} and np.ndim(v["kernel"]) == 2]
    if not dense:
        return layers
    if len(dense) > 1:
        raise ValueError(f"the model has {len(dense)} Dense layers ({', '.join(sorted(dense))}); "
                         "only a single Dense classifier after the MobileNet base converts")
    name = dense[0]
    configs = [layer.get("config") for _, layer in entries if _layer_name(layer) == name]
    activation = configs[0].get("activation") if configs and isinstance(configs[0], dict) else None
    if activation not in (None, "linear", "softmax"):
        raise ValueError(f"the classifier Dense {name!r} applies {activation!r}; only softmax or "
                         "linear classifiers convert (npmobilenet models return logits and "
                         "predict applies softmax)")
    if activation == "softmax":
        notes.append(f"Dense {name!r} applies softmax: the model returns its logits, predict "
                     "shows the softmax probabilities")
    elif not configs:
        notes.append(f"Dense {name!r} taken as the classifier (no model config in the file: "
                     "its activation is unknown; the model returns its pre-activation outputs)")
    layers[classifier] = layers.pop(name)
    return layers


def _is_model_file(path) -> bool:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError):
        return False  # read_safetensors names what is wrong


def _torch_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``model.features.state_dict()`` (keys ``0.0.weight``, ...) as the model's own keys."""
    if tensors and all(name[:1].isdigit() for name in tensors):
        return {f"features.{name}": value for name, value in tensors.items()}
    return tensors


def convert(path: os.PathLike | str, source: str | None = None, arch: str | None = None,
            depth_multiplier: float | None = None, dtype=np.float32, ema: bool = True) -> Conversion:
    """Read a weights file and convert it (see :func:`convert_state`).

    ``path``: a torchvision or timm ``.pth`` or ``.safetensors``, a Keras ``.h5`` (Keras 2 weights,
    legacy full model), ``.weights.h5`` or ``.keras``, or a TensorFlow checkpoint (its prefix, its
    ``.index`` or its folder). ``source`` and ``arch`` are detected when None (the format from
    the file's bytes, the framework and architecture from its tensor names); ``ema``: TF-slim
    checkpoints are read from their ExponentialMovingAverage shadows when present.

    Raises FileNotFoundError, or ValueError naming the file: a ``source`` that cannot have
    written it (naming the format it looks like), a file that cannot be read safely, or one that
    does not match the architecture.
    """
    if not (os.path.exists(path) or os.path.exists(f"{os.fspath(path)}.index")):
        raise FileNotFoundError(f"no such weights file: {path}")
    if source is not None and source not in SOURCES:
        raise ValueError(f"source: expected one of {SOURCES}, got {source!r}")
    found = check_source(path, source)
    if found is None and source is None:
        raise ValueError(f"{path}: not a weights file npmobilenet reads ("
                         f"{', '.join(description for description, _ in FORMATS.values())}); "
                         "give --from if it is one")
    notes: list[str] = []
    ignored: list[str] = []
    given, source = source, source or FORMATS[found][1][0]
    if source == "tf-slim":
        shapes, load, ignored = _slim_tensors(path, ema, notes)
    else:
        if source == "keras":
            weights = read_keras_weights(path)
            tensors = _flatten_keras(weights.layers)
            arch = arch or guess_arch(source, tensors)
            classifier = SOURCE_MODELS[(source, arch)].classifier_bias.split("/")[0] \
                if (source, arch) in SOURCE_MODELS else ""
            try:
                tensors = _flatten_keras(_keras_head(weights, classifier, notes))
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
        else:
            if found == "safetensors" and _is_model_file(path):
                raise ValueError(f"{path}: already an npmobilenet model file (use it as is)")
            tensors = _torch_names(read_safetensors(path) if found == "safetensors"
                                   else read_torch_state_dict(path))
            detected = torch_source(tensors)
            if given is not None and given != detected:
                raise ValueError(f"{path}: looks like a {detected} state dict, not {given}; "
                                 f"use --from {detected}")
            source = detected
        shapes = {name: np.shape(value) for name, value in tensors.items()}
        load = tensors.__getitem__
    arch = arch or guess_arch(source, shapes)
    try:
        model, unused = _convert(source, arch, shapes, load, depth_multiplier, dtype)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    options = model.graph.options
    if options.num_classes == 0:
        notes.append(f"no classifier in the file: the model returns pooled features "
                     f"({model.graph.nodes[-1].out_shape[0]} per image)")
    return Conversion(model, source, arch, notes, sorted([*ignored, *unused]))


def convert_file(source: str | None, arch: str | None, path: os.PathLike | str,
                 depth_multiplier: float | None = None, dtype=np.float32) -> Model:
    """Read a weights file and convert it; ``source`` and ``arch`` detected when None (see
    :func:`convert`)."""
    return convert(path, source, arch, depth_multiplier, dtype).model

"""Model files: one safetensors file with the weights, the spec and options, and the preprocessing.

The safetensors header is JSON (tensor names, dtypes, shapes, offsets) followed by raw bytes, so
loading runs no code; safetensors caps the header at 100 MB and checks that the tensors exactly
cover the bytes after it. Its string metadata holds:

``format`` (``"npmobilenet"``), ``format_version`` (``"1"``), ``spec`` (the full spec, JSON),
``options`` (the resolved build options, JSON, padding mode included), ``preprocess`` (JSON:
the preset, or null) and, when the model has them, ``classes`` (JSON: one name per class).

Loading validates the metadata field by field and compares every tensor's name, shape and
dtype with the graph the spec and options describe before reading any of them, so the memory a
file makes this process allocate is what the file holds.

Writes go to a temporary file in the destination's folder, are flushed to disk, then renamed over
the destination: an interrupted save leaves the previous file intact. The file gets the
permissions the umask gives a new file (the temporary file is created private).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile

import numpy as np

from ..architecture import Graph, Options, build_graph, load_spec
from ..model import Model
from ..validate import LIMITS, show
from .preprocess import validate_preset

__all__ = ["save", "load", "load_training_state", "FORMAT", "FORMAT_VERSION"]

FORMAT = "npmobilenet"
FORMAT_VERSION = "1"
TRAINING_PREFIX = "training/"

_WEIGHT_DTYPES = {"F32": np.float32, "F64": np.float64}  # safetensors dtype -> the model's
_OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(Options))


def _spec_of(model: Model) -> dict:
    return model.spec if model.spec is not None else load_spec(model.graph.name)


def save(model: Model, path: os.PathLike | str, preprocess: dict | None = None,
         training_state: tuple[dict, dict] | None = None) -> None:
    """Write ``model`` (weights, spec, options, preprocessing, class names) to ``path`` atomically.

    Parameters
    ----------
    model : Model
    path : destination (conventionally ``.safetensors``)
    preprocess : preset dict; defaults to ``model.preprocess`` when the model has one.
    training_state : (arrays, JSON-able dict), optional
        A trainer's state (optimizer buffers, epoch, ...) stored in the same file, so a
        checkpoint is one atomic write; :func:`load` ignores it, :func:`load_training_state`
        reads it.

    Raises ValueError for a preset or class names :func:`load` would refuse.
    """
    from safetensors.numpy import save_file

    preprocess = preprocess if preprocess is not None else model.preprocess
    if preprocess is not None:
        validate_preset(preprocess)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": json.dumps(_spec_of(model)),
        "options": json.dumps(model.graph.options.to_dict()),
        "preprocess": json.dumps(preprocess),
    }
    if model.class_names is not None:
        metadata["classes"] = json.dumps(_class_names(list(model.class_names), model.graph))
    tensors = {name: np.ascontiguousarray(value) for name, value in model.state_dict().items()}
    if training_state is not None:
        arrays, info = training_state
        tensors.update((TRAINING_PREFIX + name, np.ascontiguousarray(value)) for name, value in arrays.items())
        metadata["training"] = json.dumps(info)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask. Reading it means setting it for a moment, for the whole process:
    a file another thread creates in that moment is private (umask 077); acceptable in a CLI."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _field(metadata: dict, key: str) -> object:
    """A metadata field's JSON value, nested at most LIMITS["nesting_depth"] deep (copying or
    checking a deeper one would recurse past Python's limit)."""
    if key not in metadata:
        raise ValueError(f"model file metadata lacks {key!r}")
    too_deep = f"metadata field {key!r} is nested more than {LIMITS['nesting_depth']} levels deep"
    try:
        value = json.loads(metadata[key])
    except json.JSONDecodeError as error:
        raise ValueError(f"metadata field {key!r} is not valid JSON: {error}") from None
    except RecursionError:
        raise ValueError(too_deep) from None
    if _nesting(value) > LIMITS["nesting_depth"]:
        raise ValueError(too_deep)
    return value


def _nesting(value) -> int:
    """Nesting depth of a parsed JSON value, found without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _options(value) -> dict:
    """The stored build options: an object naming only options a graph takes."""
    if not isinstance(value, dict):
        raise ValueError(f"metadata 'options' must be an object, got {show(value)}")
    unknown = sorted(set(value) - _OPTION_NAMES)
    if unknown:
        raise ValueError(f"metadata 'options': unknown option {', '.join(map(repr, unknown))} "
                         f"(allowed: {', '.join(sorted(_OPTION_NAMES))})")
    return value


def _class_names(value, graph: Graph) -> list[str]:
    """One unique, non-empty name per output class of ``graph``."""
    if not (isinstance(value, list) and all(isinstance(name, str) and name for name in value)):
        raise ValueError(f"classes: expected a list of non-empty strings, got {show(value)}")
    if len(set(value)) != len(value):
        repeated = next(name for name in value if value.count(name) > 1)
        raise ValueError(f"classes: {repeated!r} is named more than once")
    if len(value) != graph.options.num_classes:
        raise ValueError(f"classes: {len(value)} names for a model with "
                         f"{graph.options.num_classes} classes")
    return value


def _weight_dtype(handle, graph: Graph) -> np.dtype:
    """Compare the file's weight tensors with what ``graph`` expects (names, shapes, one float
    dtype), reading only the header; returns that dtype."""
    expected = {**graph.parameter_shapes(), **graph.buffer_shapes()}
    found = {}
    for name in handle.keys():
        if not name.startswith(TRAINING_PREFIX):
            header = handle.get_slice(name)
            found[name] = (tuple(header.get_shape()), header.get_dtype())
    problems = [f"{name}: expected {tuple(shape)}, got {found[name][0]}"
                for name, shape in expected.items() if name in found and found[name][0] != tuple(shape)]
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:10])}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:10])}")
    if problems:
        raise ValueError("the tensors do not match the spec: " + "; ".join(problems[:10]))
    dtypes = {dtype for _, dtype in found.values()}
    if len(dtypes) != 1 or not dtypes <= set(_WEIGHT_DTYPES):
        raise ValueError(f"expected all tensors F32 or all F64, found {sorted(dtypes)}")
    dtype = np.dtype(_WEIGHT_DTYPES[dtypes.pop()])
    sizes = [math.prod(shape) * dtype.itemsize for shape, _ in found.values()]
    if max(sizes, default=0) > LIMITS["tensor_bytes"] or sum(sizes) > LIMITS["file_tensor_bytes"]:
        raise ValueError(f"the tensors take {sum(sizes)} bytes, more than LIMITS['tensor_bytes'] "
                         "for one or LIMITS['file_tensor_bytes'] for all allow")
    return dtype


def _read_model(handle) -> Model:
    metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"not an npmobilenet model file (format {show(metadata.get('format'))})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported format_version {show(metadata.get('format_version'))} "
                         f"(this version reads {FORMAT_VERSION!r})")
    spec = _field(metadata, "spec")
    if not isinstance(spec, dict):  # a string would name a built-in spec or a local file
        raise ValueError(f"metadata 'spec' must be an object, got {show(spec)}")
    spec = load_spec(spec)
    graph = build_graph(spec, **_options(_field(metadata, "options")))
    preprocess = _field(metadata, "preprocess")
    preprocess = None if preprocess is None else validate_preset(preprocess)
    classes = _class_names(_field(metadata, "classes"), graph) if "classes" in metadata else None
    dtype = _weight_dtype(handle, graph)
    params = graph.parameter_shapes()
    tensors = {name: handle.get_tensor(name) for name in handle.keys()
               if not name.startswith(TRAINING_PREFIX)}
    # The graph holds the file's weights directly: no random weights are drawn first.
    model = Model(graph, {name: value for name, value in tensors.items() if name in params},
                  {name: value for name, value in tensors.items() if name not in params}, dtype=dtype)
    model.spec, model.preprocess, model.class_names = spec, preprocess, classes
    return model.eval()


def load(path: os.PathLike | str) -> Model:
    """Read a model file written by :func:`save`; returns the model in eval mode.

    The model's dtype is that of the stored tensors; ``model.preprocess`` is the stored preset
    (or None), ``model.class_names`` the stored class names (or None). Raises
    FileNotFoundError, or ValueError naming the file and what is wrong for a file that is not a
    valid model file (truncated, wrong format, metadata out of range, tensors not matching the
    spec, NaN or infinite weights, a negative moving variance).
    """
    from safetensors import SafetensorError, safe_open

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        with safe_open(path, framework="numpy") as handle:
            return _read_model(handle)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable model file (truncated or corrupt?): {error}") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def load_training_state(path: os.PathLike | str) -> tuple[dict, dict]:
    """The (arrays, info) a trainer stored with :func:`save`; raises ValueError if there is none."""
    from safetensors import SafetensorError, safe_open

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint: {path}")
    try:
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            arrays = {name[len(TRAINING_PREFIX):]: handle.get_tensor(name) for name in handle.keys()
                      if name.startswith(TRAINING_PREFIX)}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable checkpoint (truncated or corrupt?): {error}") from None
    if "training" not in metadata:
        raise ValueError(f"{path}: a model file without training state; cannot resume from it")
    try:
        return arrays, _field(metadata, "training")
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None

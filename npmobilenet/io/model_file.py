"""Model files: one safetensors file with the weights, the spec and options, and the preprocessing.

The safetensors header is JSON (tensor names, dtypes, shapes, offsets) followed by raw bytes, so
loading runs no code. Its string metadata holds:

``format`` (``"npmobilenet"``), ``format_version`` (``"1"``), ``spec`` (the full spec, JSON),
``options`` (the resolved build options, JSON, padding mode included) and ``preprocess`` (JSON:
the preset, or null).

Writes go to a temporary file in the destination's folder, are flushed to disk, then renamed over
the destination: an interrupted save leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from ..model import Model, build_model
from ..architecture import load_spec
from .preprocess import validate_preset

__all__ = ["save", "load", "load_training_state", "FORMAT", "FORMAT_VERSION"]

FORMAT = "npmobilenet"
FORMAT_VERSION = "1"


def _spec_of(model: Model) -> dict:
    return model.spec if model.spec is not None else load_spec(model.graph.name)


TRAINING_PREFIX = "training/"


def save(model: Model, path: os.PathLike | str, preprocess: dict | None = None,
         training_state: tuple[dict, dict] | None = None) -> None:
    """Write ``model`` (weights, spec, options, preprocessing) to ``path`` atomically.

    Parameters
    ----------
    model : Model
    path : destination (conventionally ``.safetensors``)
    preprocess : preset dict; defaults to ``model.preprocess`` when the model has one.
    training_state : (arrays, JSON-able dict), optional
        A trainer's state (optimizer buffers, epoch, ...) stored in the same file, so a
        checkpoint is one atomic write; :func:`load` ignores it, :func:`load_training_state`
        reads it.
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
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _field(metadata: dict, key: str, path) -> object:
    if key not in metadata:
        raise ValueError(f"{path}: model file metadata lacks {key!r}")
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: metadata field {key!r} is not valid JSON: {error}") from None


def load(path: os.PathLike | str) -> Model:
    """Read a model file written by :func:`save`; returns the model in eval mode.

    The model's dtype is that of the stored tensors; ``model.preprocess`` is the stored preset
    (or None). Raises FileNotFoundError, or ValueError for a file that is not a valid model file
    (truncated, wrong format, tensors not matching the spec, naming what is wrong).
    """
    from safetensors import SafetensorError, safe_open

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()
                       if not name.startswith(TRAINING_PREFIX)}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable model file (truncated or corrupt?): {error}") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not an npmobilenet model file (format {metadata.get('format')!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {metadata.get('format_version')!r} "
                         f"(this version reads {FORMAT_VERSION!r})")
    spec = _field(metadata, "spec", path)
    options = _field(metadata, "options", path)
    preprocess = _field(metadata, "preprocess", path)
    if not isinstance(options, dict):
        raise ValueError(f"{path}: metadata 'options' must be an object, got {options!r}")
    dtypes = {value.dtype for value in tensors.values()}
    if len(dtypes) != 1 or not dtypes <= {np.dtype(np.float32), np.dtype(np.float64)}:
        raise ValueError(f"{path}: expected all tensors float32 or all float64, found "
                         f"{sorted(d.name for d in dtypes)}")
    try:
        model = build_model(spec, dtype=dtypes.pop(), **options)
        model.load_state_dict(tensors)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    model.spec = load_spec(spec)
    model.preprocess = None if preprocess is None else validate_preset(preprocess)
    return model.eval()


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
    return arrays, _field(metadata, "training", path)

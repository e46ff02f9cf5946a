"""Read Keras HDF5 weights (h5py) into ``{layer: {variable: ndarray}}``.

Three layouts are understood:

- the Keras-2 weight files that ``keras.applications`` downloads (and ``model.save_weights`` wrote
  in Keras 2): layer groups at the top level, the file's ``layer_names`` attribute listing them,
  each group's ``weight_names`` attribute listing ``"layer/variable:0"`` datasets;
- the legacy full-model file (``model.save("x.h5")`` in Keras 2 and 3): the same structure under
  the ``model_weights`` group, with Keras 3's names ``"layer/variable"`` (no ``:0``), and the
  model's JSON config in the root attribute ``model_config``. A nested model (a
  ``keras.applications`` base inside a transfer-learning model) is one group holding its
  layers' weights, ``"Conv1/kernel"``, ...: they are keyed by their own layer names;
- Keras 3's ``.weights.h5`` (``model.save_weights``, and the ``model.weights.h5`` inside a
  ``.keras`` archive): ``layers/<class>[_N]/vars/<i>``, groups named by layer class in the
  model's order, nested models under their own ``layers``; a layer's name is the ``name``
  attribute of its ``vars`` group (written by recent Keras 3), or else found from the model's
  config (the ``.keras`` archive's ``config.json``). Variables are numbered in creation order:
  ``kernel, bias`` for Conv2D, DepthwiseConv2D and Dense, ``gamma, beta, moving_mean,
  moving_variance`` for BatchNormalization.

Attributes too large for one HDF5 header are split by Keras into ``name0``, ``name1``, ...; those
are joined. Variable names are reduced to their last component without ``:0`` (``kernel``,
``depthwise_kernel``, ``gamma``, ``moving_variance``, ``bias``, ...).

An HDF5 file can point outside itself, and HDF5 follows such pointers when an object is reached
or read, not when the file is opened. So every object is inspected before it is used: it is
reached only through hard links (an external link opens another file, a soft link can loop), a
dataset may not keep its data in other files (external storage, virtual datasets) or pass
through a filter HDF5 would load as a plugin, and its size (shape x itemsize) is checked against
:data:`npmobilenet.validate.LIMITS` and against the bytes it occupies in the file before it is
read. The model config is parsed with ``json`` as data (at most ``LIMITS["metadata_bytes"]``);
nothing in it is ever run or imported.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..validate import LIMITS

__all__ = ["KerasWeights", "read_keras_h5", "read_keras_weights"]

# h5py errors for a corrupt file or an attribute of a type it cannot map to NumPy.
_H5_ERRORS = (OSError, RuntimeError, KeyError, TypeError)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# Keras 3 .weights.h5: a layer class (snake case, as the group is named) -> its variables in order
_KERAS3_VARIABLES = {"conv2d": ("kernel", "bias"), "depthwise_conv2d": ("kernel", "bias"),
                     "dense": ("kernel", "bias")}
_MAX_VARIABLES = 64  # variables of one layer in a .weights.h5


@dataclass
class KerasWeights:
    """What a Keras file holds: every layer's weights by layer name, and the model's config
    (parsed JSON, or None when the file has none)."""

    layers: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    config: dict | None = None


def _strings(obj: Any, name: str, owner: str) -> list[str]:
    """A string-list attribute, joining Keras's chunked form (``name0``, ``name1``, ...).

    Raises KeyError if neither form is present, ValueError if it is not a list of strings.
    """
    attrs = obj.attrs
    try:
        if name in attrs:
            chunks = [attrs[name]]
        else:
            chunks, index = [], 0
            while f"{name}{index}" in attrs:
                chunks.append(attrs[f"{name}{index}"])
                index += 1
    except _H5_ERRORS as error:
        raise ValueError(f"{owner}: cannot read attribute {name!r} ({error})") from None
    if not chunks:
        raise KeyError(name)
    values = []
    for chunk in chunks:
        if not (isinstance(chunk, np.ndarray) and chunk.ndim == 1
                and (chunk.size == 0 or all(isinstance(v, (bytes, str)) for v in chunk))):
            raise ValueError(f"{owner}: attribute {name!r} must be a list of strings, got "
                             f"{type(chunk).__name__} of dtype {getattr(chunk, 'dtype', None)}")
        values.extend(chunk)
    try:
        return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]
    except UnicodeDecodeError:
        raise ValueError(f"{owner}: attribute {name!r} holds a name that is not UTF-8") from None


def _child(group: Any, path: str, kind: type, what: str) -> Any:
    """``group[path]``, a ``kind`` (h5py.Group or h5py.Dataset) reached through hard links only:
    each component's link is inspected before anything beneath it is looked up."""
    import h5py
    from h5py import h5l, h5o

    parts = path.split("/")
    if "" in parts:
        raise ValueError(f"{what}: bad name {path!r}")
    for end in range(1, len(parts) + 1):
        prefix = "/".join(parts[:end])
        try:
            link = group.id.links.get_info(prefix.encode("utf8")).type
        except _H5_ERRORS:
            raise ValueError(f"{what} is listed but missing") from None
        if link != h5l.TYPE_HARD:
            kind_of_link = {h5l.TYPE_SOFT: "a soft", h5l.TYPE_EXTERNAL: "an external"}.get(link, "a user-defined")
            raise ValueError(f"{what}: {prefix!r} is {kind_of_link} link; links that may lead "
                             "out of the file or loop are not followed")
    try:
        object_id = h5o.open(group.id, path.encode("utf8"))
    except _H5_ERRORS as error:
        raise ValueError(f"{what}: cannot open it (corrupt file?): {error}") from None
    found = {h5py.h5g.GroupID: h5py.Group, h5py.h5d.DatasetID: h5py.Dataset}.get(type(object_id))
    if found is not kind:
        found_name = found.__name__.lower() if found else "named datatype"
        raise ValueError(f"{what} is a {found_name}, expected a {kind.__name__.lower()}")
    return kind(object_id)


def _built_in_filters() -> frozenset[int]:
    """HDF5 filters compiled into libhdf5 and h5py; any other would be loaded as a plugin."""
    from h5py import h5z

    return frozenset({h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE, h5z.FILTER_FLETCHER32,
                      h5z.FILTER_SZIP, h5z.FILTER_NBIT, h5z.FILTER_SCALEOFFSET, h5z.FILTER_LZF})


def _checked_nbytes(dataset: Any, what: str) -> int:
    """The bytes reading ``dataset`` allocates, once its data is known to be in this file,
    numeric, within LIMITS, and at most ``zip_ratio`` times the bytes it occupies on disk."""
    if dataset.is_virtual:
        raise ValueError(f"{what} is a virtual dataset: its data lives in other files")
    if dataset.external:
        raise ValueError(f"{what} keeps its data in another file ({dataset.external[0][0]!r}); "
                         "weights must be stored inside the file")
    unknown = set(dataset.filter_ids) - _built_in_filters()
    if unknown:
        raise ValueError(f"{what} passes through HDF5 filter {min(unknown)}, which is not built "
                         "in (it would be loaded as a plugin)")
    if dataset.shape is None or dataset.dtype.kind not in "fiub":
        raise ValueError(f"{what} is not a numeric array (dtype {dataset.dtype}, shape {dataset.shape})")
    nbytes = math.prod(dataset.shape) * dataset.dtype.itemsize
    if nbytes > LIMITS["tensor_bytes"]:
        raise ValueError(f"{what} of shape {dataset.shape} would take {nbytes} bytes, more than "
                         f"LIMITS['tensor_bytes'] ({LIMITS['tensor_bytes']})")
    stored = dataset.id.get_storage_size()
    if nbytes > LIMITS["zip_ratio"] * stored:
        raise ValueError(f"{what} of shape {dataset.shape} would take {nbytes} bytes from {stored} "
                         f"stored, more than LIMITS['zip_ratio'] ({LIMITS['zip_ratio']}) times as "
                         "many (a decompression bomb, or data never written)")
    return nbytes


class _Budget:
    """The bytes read so far, against LIMITS['file_tensor_bytes']."""

    def __init__(self):
        self.total = 0

    def read(self, dataset: Any, what: str) -> np.ndarray:
        self.total += _checked_nbytes(dataset, what)
        if self.total > LIMITS["file_tensor_bytes"]:
            raise ValueError(f"the tensors take more than LIMITS['file_tensor_bytes'] "
                             f"({LIMITS['file_tensor_bytes']}) bytes together")
        try:
            return np.asarray(dataset[()])
        except _H5_ERRORS as error:
            raise ValueError(f"cannot read {what} (truncated file?): {error}") from None


def _add(layers: dict, layer: str, variable: str, value: np.ndarray, what: str) -> None:
    if variable in layers.setdefault(layer, {}):
        raise ValueError(f"{what}: a second tensor for {layer}/{variable}")
    layers[layer][variable] = value


def _has(group: Any, name: str) -> bool:
    try:
        return name in group
    except _H5_ERRORS as error:
        raise ValueError(f"cannot list a group (corrupt file?): {error}") from None


def _legacy_layers(handle: Any) -> dict[str, dict[str, np.ndarray]]:
    """The Keras-2 weights and legacy full-model layouts (``layer_names``/``weight_names``)."""
    import h5py

    has_model_weights = _has(handle, "model_weights")
    root = _child(handle, "model_weights", h5py.Group, "group 'model_weights'") if has_model_weights else handle
    try:
        layer_names = _strings(root, "layer_names", "the file")
    except KeyError:
        raise ValueError("no 'layer_names' attribute at the top level or under 'model_weights', "
                         "and no Keras 3 'layers' group: not a Keras HDF5 weights file") from None
    layers: dict[str, dict[str, np.ndarray]] = {}
    budget = _Budget()
    for layer in layer_names:
        group = _child(root, layer, h5py.Group, f"layer {layer!r}")
        try:
            weight_names = _strings(group, "weight_names", f"layer {layer!r}")
        except KeyError:
            raise ValueError(f"layer {layer!r} has no 'weight_names' attribute") from None
        # A nested model's group holds its layers' weights, named "<inner layer>/<variable>".
        owners = {name.split("/")[-2] for name in weight_names if name.count("/") >= 1}
        nested = len(owners) > 1
        for weight_name in weight_names:
            what = f"tensor {layer}/{weight_name}"
            value = budget.read(_child(group, weight_name, h5py.Dataset, what), what)
            owner = weight_name.split("/")[-2] if nested and "/" in weight_name else layer
            _add(layers, owner, _variable(weight_name), value, what)
    return layers


def _snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: how a .weights.h5 names a layer's group by its class."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _config_layers(config: Any) -> list:
    """The ``layers`` list of a Functional or Sequential config (``[]`` when there is none)."""
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else None
    return layers if isinstance(layers, list) else []


def _config_paths(config: dict | None) -> dict[str, dict]:
    """``.weights.h5`` group path -> the layer's config entry, as Keras names the groups: the
    model's layers in order, by snake-case class name, ``_1``, ``_2``, ... for repeats."""
    paths: dict[str, dict] = {}
    stack = [(config, "")]
    while stack:
        model, path = stack.pop()
        used: dict[str, int] = {}
        for layer in _config_layers(model):
            if not isinstance(layer, dict) or not isinstance(layer.get("class_name"), str):
                continue
            snake = _snake_case(layer["class_name"])
            used[snake] = used.get(snake, -1) + 1
            group = f"{path}layers/{snake}" + (f"_{used[snake]}" if used[snake] else "")
            paths[group] = layer
            if len(paths) > LIMITS["layers"] * 4:
                raise ValueError("the model config lists more layers than LIMITS['layers'] allows")
            stack.append((layer, group + "/"))
    return paths


def _layer_config(entry: dict | None) -> dict:
    config = entry.get("config") if isinstance(entry, dict) else None
    return config if isinstance(config, dict) else {}


def _keras3_variables(group_name: str, count: int, config: dict, what: str) -> tuple[str, ...]:
    """The names of a Keras 3 layer's ``count`` variables, from its class (the group's name)."""
    kind = re.sub(r"_\d+$", "", group_name)
    if kind == "batch_normalization":
        names = (*(("gamma",) if config.get("scale", True) else ()),
                 *(("beta",) if config.get("center", True) else ()), "moving_mean", "moving_variance")
    else:
        names = _KERAS3_VARIABLES.get(kind, tuple(str(i) for i in range(count)))
    if count > len(names):
        raise ValueError(f"{what}: {count} variables for a {kind} layer, which has {len(names)}")
    return names[:count]


def _keras3_layers(handle: Any, config: dict | None) -> dict[str, dict[str, np.ndarray]]:
    """Keras 3's ``layers/<class>[_N]/vars/<i>`` layout, nested models included."""
    import h5py

    from_config = _config_paths(config)
    layers: dict[str, dict[str, np.ndarray]] = {}
    budget = _Budget()
    stack = [("", 0)]
    while stack:
        path, depth = stack.pop()
        if depth > LIMITS["nesting_depth"]:
            raise ValueError(f"layers nested more than {LIMITS['nesting_depth']} levels deep")
        container = _child(handle, path + "layers", h5py.Group, f"group {path + 'layers'!r}")
        try:
            children = list(container.keys())
        except _H5_ERRORS as error:
            raise ValueError(f"cannot list group {path + 'layers'!r} (corrupt file?): {error}") from None
        for child in children:
            group_path = f"{path}layers/{child}"
            group = _child(handle, group_path, h5py.Group, f"group {group_path!r}")
            if _has(group, "layers"):
                stack.append((group_path + "/", depth + 1))
            if not _has(group, "vars"):
                continue
            variables = _child(group, "vars", h5py.Group, f"group {group_path + '/vars'!r}")
            count = len(variables)
            if count == 0:
                continue
            if count > _MAX_VARIABLES or set(variables.keys()) != {str(i) for i in range(count)}:
                raise ValueError(f"group {group_path}/vars: expected datasets 0 to {count - 1}")
            entry = from_config.get(group_path)
            try:
                name = variables.attrs.get("name", _layer_config(entry).get("name"))
            except _H5_ERRORS as error:
                raise ValueError(f"group {group_path}/vars: cannot read its 'name' ({error})") from None
            if isinstance(name, bytes):
                name = name.decode("utf8", errors="replace")
            if not isinstance(name, str) or not name:
                raise ValueError(f"group {group_path}: the layer's name is not recorded (no 'name' "
                                 "attribute, no model config); convert the .keras archive or a "
                                 "legacy .h5 instead")
            names = _keras3_variables(child, count, _layer_config(entry), f"layer {name!r}")
            for index, variable in enumerate(names):
                what = f"tensor {group_path}/vars/{index} ({name}/{variable})"
                value = budget.read(_child(variables, str(index), h5py.Dataset, what), what)
                _add(layers, name, variable, value, what)
    return layers


def _model_config(handle: Any) -> dict | None:
    """The root attribute ``model_config`` (legacy full-model files), parsed as JSON data."""
    try:
        if "model_config" not in handle.attrs:
            return None
        size = handle.attrs.get_id("model_config").get_storage_size()
        if size > LIMITS["metadata_bytes"]:
            raise ValueError(f"attribute 'model_config' takes {size} bytes, more than "
                             f"LIMITS['metadata_bytes'] ({LIMITS['metadata_bytes']})")
        raw = handle.attrs["model_config"]
    except _H5_ERRORS as error:
        raise ValueError(f"cannot read attribute 'model_config' ({error})") from None
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw[()]
    if not isinstance(raw, (bytes, str)):
        raise ValueError(f"attribute 'model_config' is not text ({type(raw).__name__})")
    return json_document(raw, "attribute 'model_config'")


def json_document(raw: bytes | str, what: str) -> dict:
    """A JSON object read as data, nested at most ``LIMITS["nesting_depth"]`` deep."""
    from .model_file import _nesting

    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} is not valid JSON: {error}") from None
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a JSON object")
    if _nesting(value) > LIMITS["nesting_depth"]:
        raise ValueError(f"{what} is nested more than {LIMITS['nesting_depth']} levels deep")
    return value


def read_h5_handle(handle: Any, config: dict | None = None) -> KerasWeights:
    """Every layer's weights from an open h5py file in any of the three layouts; ``config``
    (a ``.keras`` archive's) names the layers of a ``.weights.h5`` that does not."""
    keras3 = _has(handle, "layers") and not _has(handle, "model_weights") and "layer_names" not in handle.attrs
    if keras3:
        return KerasWeights(_keras3_layers(handle, config), config)
    return KerasWeights(_legacy_layers(handle), _model_config(handle) if config is None else config)


def _variable(weight_name: str) -> str:
    name = weight_name.split("/")[-1]
    return name[:-2] if name.endswith(":0") else name


def read_keras_weights(path: os.PathLike | str) -> KerasWeights:
    """Read a Keras file, touching no other file: an HDF5 file in any of the three layouts, or
    a ``.keras`` archive (see :mod:`.keras_archive`).

    Returns
    -------
    KerasWeights: layer name -> variable name -> ndarray (Keras layout: conv kernels
    ``(kh, kw, in, out)``, depthwise ``(kh, kw, C, M)``, dense ``(in, out)``; layers without
    weights left out), and the model config when the file holds one.

    Raises
    ------
    FileNotFoundError; ValueError naming the file (and the layer or tensor) if it is not HDF5
    or a Keras archive, is truncated or corrupt, is not one of the layouts, reaches outside
    itself (external or soft links, external storage, virtual datasets, plugin filters), or
    holds a tensor that is not numeric or larger than :data:`npmobilenet.validate.LIMITS` allow.
    """
    import h5py  # imported here: only Keras conversion needs it

    from .keras_archive import is_keras_archive, read_keras_archive

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weights file: {path}")
    if is_keras_archive(path) or os.fspath(path).endswith(".keras"):
        return read_keras_archive(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {error}") from None
    try:
        with handle:
            return read_h5_handle(handle)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def read_keras_h5(path: os.PathLike | str) -> dict[str, dict[str, np.ndarray]]:
    """Every layer's weights of a Keras HDF5 file or ``.keras`` archive (see
    :func:`read_keras_weights`), by layer name."""
    return read_keras_weights(path).layers


def open_h5_bytes(raw: bytes):
    """An h5py file over bytes in memory (a ``.keras`` archive's weights member)."""
    import h5py

    return h5py.File(io.BytesIO(raw), "r")

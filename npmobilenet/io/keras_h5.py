"""Read Keras HDF5 weights (h5py) into ``{layer: {variable: ndarray}}``.

Two layouts are understood:

- the Keras-2 weight files that ``keras.applications`` downloads (and ``model.save_weights`` wrote
  in Keras 2): layer groups at the top level, the file's ``layer_names`` attribute listing them,
  each group's ``weight_names`` attribute listing ``"layer/variable:0"`` datasets;
- the legacy full-model file (``model.save("x.h5")`` in Keras 2 and 3): the same structure under
  the ``model_weights`` group, with Keras 3's names ``"layer/variable"`` (no ``:0``).

Attributes too large for one HDF5 header are split by Keras into ``name0``, ``name1``, ...; those
are joined. Variable names are reduced to their last component without ``:0`` (``kernel``,
``depthwise_kernel``, ``gamma``, ``moving_variance``, ``bias``, ...).

An HDF5 file can point outside itself, and HDF5 follows such pointers when an object is reached
or read, not when the file is opened. So every object is inspected before it is used: it is
reached only through hard links (an external link opens another file, a soft link can loop), a
dataset may not keep its data in other files (external storage, virtual datasets) or pass
through a filter HDF5 would load as a plugin, and its size (shape x itemsize) is checked against
:data:`npmobilenet.validate.LIMITS` and against the bytes it occupies in the file before it is
read.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..validate import LIMITS

__all__ = ["read_keras_h5"]

# h5py errors for a corrupt file or an attribute of a type it cannot map to NumPy.
_H5_ERRORS = (OSError, RuntimeError, KeyError, TypeError)


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


def _read_layers(handle: Any) -> dict[str, dict[str, np.ndarray]]:
    import h5py

    try:
        has_model_weights = "model_weights" in handle
    except _H5_ERRORS as error:
        raise ValueError(f"cannot list the top-level group (corrupt file?): {error}") from None
    root = _child(handle, "model_weights", h5py.Group, "group 'model_weights'") if has_model_weights else handle
    try:
        layer_names = _strings(root, "layer_names", "the file")
    except KeyError:
        raise ValueError(
            "no 'layer_names' attribute at the top level or under 'model_weights': "
            "not a Keras HDF5 weights file (Keras 3 '.weights.h5' files are not supported)"
        ) from None
    layers: dict[str, dict[str, np.ndarray]] = {}
    total = 0
    for layer in layer_names:
        group = _child(root, layer, h5py.Group, f"layer {layer!r}")
        try:
            weight_names = _strings(group, "weight_names", f"layer {layer!r}")
        except KeyError:
            raise ValueError(f"layer {layer!r} has no 'weight_names' attribute") from None
        values = {}
        for weight_name in weight_names:
            what = f"tensor {layer}/{weight_name}"
            dataset = _child(group, weight_name, h5py.Dataset, what)
            total += _checked_nbytes(dataset, what)
            if total > LIMITS["file_tensor_bytes"]:
                raise ValueError(f"the tensors take more than LIMITS['file_tensor_bytes'] "
                                 f"({LIMITS['file_tensor_bytes']}) bytes together")
            try:
                values[_variable(weight_name)] = np.asarray(dataset[()])
            except _H5_ERRORS as error:
                raise ValueError(f"cannot read {what} (truncated file?): {error}") from None
        if values:
            layers[layer] = values
    return layers


def _variable(weight_name: str) -> str:
    name = weight_name.split("/")[-1]
    return name[:-2] if name.endswith(":0") else name


def read_keras_h5(path: os.PathLike | str) -> dict[str, dict[str, np.ndarray]]:
    """Read every layer's weights from a Keras HDF5 file, touching no other file.

    Parameters
    ----------
    path : a Keras-2 weights file or a legacy full-model ``.h5``.

    Returns
    -------
    dict layer name -> dict variable name -> ndarray (Keras layout: conv kernels
    ``(kh, kw, in, out)``, depthwise ``(kh, kw, C, M)``, dense ``(in, out)``); layers without
    weights are left out.

    Raises
    ------
    FileNotFoundError; ValueError naming the file (and the layer or tensor) if it is not HDF5,
    is truncated or corrupt, is not one of the two layouts, reaches outside itself (external or
    soft links, external storage, virtual datasets, plugin filters), or holds a tensor that is
    not numeric or larger than :data:`npmobilenet.validate.LIMITS` allow.
    """
    import h5py  # imported here: only Keras conversion needs it

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weights file: {path}")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {error}") from None
    try:
        with handle:
            return _read_layers(handle)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None

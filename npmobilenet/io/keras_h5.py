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
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["read_keras_h5"]


def _attribute(group: Any, name: str) -> list[str]:
    """A string-list attribute, joining Keras's chunked form (``name0``, ``name1``, ...)."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
        if chunk == 0:
            raise KeyError(name)
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _variable(weight_name: str) -> str:
    name = weight_name.split("/")[-1]
    return name[:-2] if name.endswith(":0") else name


def read_keras_h5(path: os.PathLike | str) -> dict[str, dict[str, np.ndarray]]:
    """Read every layer's weights from a Keras HDF5 file.

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
    FileNotFoundError; ValueError if the file is not HDF5, is truncated, or is not one of the
    two layouts (naming what is missing).
    """
    import h5py  # imported here: only Keras conversion needs it

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weights file: {path}")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {error}") from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        try:
            layer_names = _attribute(root, "layer_names")
        except KeyError:
            raise ValueError(
                f"{path}: no 'layer_names' attribute at the top level or under 'model_weights': "
                "not a Keras HDF5 weights file (Keras 3 '.weights.h5' files are not supported)"
            ) from None
        layers: dict[str, dict[str, np.ndarray]] = {}
        for layer in layer_names:
            if layer not in root:
                raise ValueError(f"{path}: layer {layer!r} is listed but has no group")
            group = root[layer]
            try:
                weight_names = _attribute(group, "weight_names")
            except KeyError:
                raise ValueError(f"{path}: layer {layer!r} has no 'weight_names' attribute") from None
            values = {}
            for weight_name in weight_names:
                if weight_name not in group:
                    raise ValueError(f"{path}: tensor {layer}/{weight_name} is listed but missing")
                try:
                    values[_variable(weight_name)] = np.asarray(group[weight_name][()])
                except OSError as error:
                    raise ValueError(f"{path}: cannot read tensor {layer}/{weight_name} "
                                     f"(truncated file?): {error}") from None
            if values:
                layers[layer] = values
    return layers

"""Read PyTorch ``.pth`` state dicts without torch and without running code from the file.

``torch.save`` writes either a zip archive (``<name>/data.pkl`` plus one raw file per storage under
``<name>/data/``) or, before torch 1.6, the legacy stream (magic, protocol, sys-info and object
pickles followed by the raw storages). Both hold a pickle that names functions to call. The
unpickler here admits only the names a tensor state dict needs -- ``collections.OrderedDict``, the
tensor-rebuild functions and the typed storage classes -- and maps each to a local, side-effect
free stand-in. Every other global is refused with :class:`UnsafePickleError` before anything runs.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO

import numpy as np

__all__ = ["UnsafePickleError", "read_torch_state_dict"]

# torch storage class name -> numpy dtype (little-endian; byte order is fixed up per file).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafePickleError(ValueError):
    """The pickle names a global outside the tensor allowlist; nothing from it was run."""


class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only carries the element dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A flat storage: its dtype, element count and (once read) its values."""

    def __init__(self, storage_type: _StorageType, key: str, numel: int):
        self.dtype = storage_type.dtype
        self.key = key
        self.numel = numel
        self.array: np.ndarray | None = None

    def fill(self, raw: bytes, byteorder: str) -> None:
        expected = self.numel * self.dtype.itemsize
        if len(raw) < expected:
            raise ValueError(
                f"storage {self.key!r} is truncated: expected {expected} bytes, found {len(raw)}"
            )
        dtype = self.dtype.newbyteorder("<" if byteorder == "little" else ">")
        self.array = np.frombuffer(raw, dtype=dtype, count=self.numel).astype(self.dtype)


class _TensorRef:
    """A tensor view (offset, size, stride) into a storage, materialised after all storages load."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any):
        if not isinstance(storage, _Storage):
            raise UnsafePickleError("tensor rebuild got something other than a storage")
        if not (_is_int_tuple(size) and _is_int_tuple(stride) and len(size) == len(stride)):
            raise ValueError(f"bad tensor geometry: size={size!r} stride={stride!r}")
        if not isinstance(offset, int) or offset < 0 or any(s < 0 for s in size + stride):
            raise ValueError(f"bad tensor geometry: offset={offset!r} size={size} stride={stride}")
        last = offset + sum((n - 1) * st for n, st in zip(size, stride)) if all(size) else offset - 1
        if last >= storage.numel:
            raise ValueError(
                f"tensor of size {size} (stride {stride}, offset {offset}) reaches past its "
                f"storage of {storage.numel} elements: the file is corrupt"
            )
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialise(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise ValueError(f"storage {self.storage.key!r} is missing from the file")
        if not all(self.size):
            return np.zeros(self.size, dtype=flat.dtype)
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=tuple(s * item for s in self.stride)
        )
        return np.array(view)  # own the memory; the bounds were checked in __init__


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) for v in value)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorRef):
        raise UnsafePickleError("parameter rebuild got something other than a tensor")
    return data


_ALLOWED_FUNCTIONS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable callables are the stand-ins above."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"refusing to load {module}.{name}: a weights file may only reference tensors "
            "and storages (this file would run other code when unpickled)"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        if not isinstance(numel, int) or numel < 0:
            raise ValueError(f"storage {key!r} has a bad element count {numel!r}")
        if len(pid) == 6 and pid[5] is not None:
            raise ValueError("storage views (legacy view_metadata) are not supported")
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type, key, numel)
        return self._storages[key]


def _materialise(obj: Any) -> Any:
    """Replace every tensor reference in nested dicts/lists by its array."""
    if isinstance(obj, _TensorRef):
        return obj.materialise()
    if isinstance(obj, dict):
        return {k: _materialise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _load_zip(path: os.PathLike | str) -> Any:
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise ValueError(f"{path}: not a torch.save archive (no single <name>/data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            names = set(archive.namelist())
            byteorder = "little"
            if prefix + "byteorder" in names:
                byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()
            storages: dict[str, _Storage] = {}
            result = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
            for key, storage in storages.items():
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise ValueError(f"{path}: storage {key!r} is missing (file truncated?)")
                storage.fill(archive.read(member), byteorder)
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, TypeError) as error:
        raise ValueError(f"{path}: corrupt or truncated torch archive ({error})") from error
    return result


def _load_legacy(path: os.PathLike | str) -> Any:
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as f:
        header_bytes = f.read(2)
        f.seek(0)
        try:
            header = [_RestrictedUnpickler(f, storages).load() for _ in range(3)]
            if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
                raise ValueError(f"{path}: neither a torch zip archive nor a legacy torch file")
            little = header[2].get("little_endian", True) if isinstance(header[2], dict) else True
            result = _RestrictedUnpickler(f, storages).load()
            keys = _RestrictedUnpickler(f, storages).load()
        except (pickle.UnpicklingError, EOFError, TypeError) as error:
            if header_bytes == b"PK":
                raise ValueError(f"{path}: truncated or corrupt zip archive") from error
            raise ValueError(f"{path}: corrupt or truncated torch file ({error})") from error
        if not isinstance(keys, list) or set(keys) != set(storages):
            raise ValueError(f"{path}: storage list does not match the tensors (corrupt file)")
        for key in keys:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{path}: truncated before storage {key!r}")
            numel = int.from_bytes(head, "little" if little else "big", signed=True)
            storage = storages[key]
            if numel != storage.numel:
                raise ValueError(f"{path}: storage {key!r} holds {numel} elements, expected {storage.numel}")
            storage.fill(f.read(numel * storage.dtype.itemsize), "little" if little else "big")
    return result


def read_torch_state_dict(path: os.PathLike | str) -> dict[str, np.ndarray]:
    """Read a ``torch.save``'d state dict into NumPy arrays, running no code from the file.

    Parameters
    ----------
    path : the ``.pth`` file, zip archive or legacy format.

    Returns
    -------
    dict mapping each tensor name to an ndarray in torch layout. A dict nested under the key
    ``"state_dict"`` or ``"model"`` (training checkpoints) is unwrapped.

    Raises
    ------
    UnsafePickleError (a ValueError) if the pickle references anything but tensors; ValueError if
    the file is truncated or corrupt; FileNotFoundError if it does not exist.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weights file: {path}")
    obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    obj = _materialise(obj)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}

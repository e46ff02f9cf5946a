"""Read PyTorch ``.pth`` state dicts without torch and without running code from the file.

``torch.save`` writes either a zip archive (``<name>/data.pkl`` plus one raw file per storage under
``<name>/data/``) or, before torch 1.6, the legacy stream (magic, protocol, sys-info and object
pickles followed by the raw storages). Both hold a pickle that names functions to call. The
unpickler here admits only the names a tensor state dict needs -- ``collections.OrderedDict``, the
tensor-rebuild functions and the typed storage classes -- and maps each to a local, side-effect
free stand-in. Every other global is refused with :class:`UnsafePickleError` before anything runs.

A weights file comes from a stranger, so every size it states is checked against what it holds
before anything is allocated (limits in :data:`npmobilenet.validate.LIMITS`):

- The pickle runs on Python's pure-Python unpickler: its memo is a dict and it reads only the
  bytes that are there. (The C unpickler allocates a memo up to any index a 5-byte opcode names,
  and a bytes object of any declared length, before reading; the pure-Python one does so only
  for ``BYTEARRAY8``, which is refused: torch.save never writes it.) ``BUILD`` is refused on anything
  but an ``OrderedDict`` (whose state, torch's ``_metadata``, is dropped), so a tensor cannot be
  changed after it is made. Tuples nest at most ``nesting_depth`` deep: hashing a deeper one
  recurses in C and can overflow the stack. The pickle is at most ``pickle_objects`` bytes; no
  opcode builds more than one object.
- Zip members must be stored uncompressed and unencrypted, as ``torch.save`` writes them, and lie
  inside the file; the storages together may not hold more bytes than the file does.
- Each tensor's size, stride and offset are checked against its storage when its array is made.
  A view may repeat stored values (stride 0) within ``tensor_bytes``; all tensors together may
  take at most ``tensor_bytes`` more than the storages hold, and at most ``file_tensor_bytes``.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO

import numpy as np

from ..validate import LIMITS, show

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
_BYTE_ORDERS = {"little": "<", "big": ">"}

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_MAX_DIMS = 32  # numpy's limit in 1.x
_MAX_INDEX = 1 << 48  # no size, stride or offset is this large; byte strides stay within int64

# What the pure-Python unpickler raises on a malformed stream (an unknown opcode is a KeyError,
# a short read a struct.error, popping an empty stack an IndexError, ...).
_MALFORMED_PICKLE = (pickle.UnpicklingError, EOFError, struct.error, KeyError, IndexError,
                     TypeError, AttributeError, OverflowError, RecursionError)


class UnsafePickleError(ValueError):
    """The pickle names a global outside the tensor allowlist; nothing from it was run."""


class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only carries the element dtype."""

    __slots__ = ("dtype",)

    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A flat storage: its dtype, element count and (once read) its values."""

    __slots__ = ("dtype", "key", "numel", "array")

    def __init__(self, storage_type: _StorageType, key: str, numel: int):
        self.dtype = storage_type.dtype
        self.key = key
        self.numel = numel
        self.array: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def fill(self, raw: bytes, byteorder: str) -> None:
        """Adopt ``raw`` (exactly :attr:`nbytes`) without copying; tensors copy out of it."""
        self.array = np.frombuffer(raw, dtype=self.dtype.newbyteorder(_BYTE_ORDERS[byteorder]))


class _TensorRef:
    """A tensor view (offset, size, stride) into a storage, copied out by :meth:`materialise`
    once every storage is read. Nothing in the pickle can change it after it is made."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any):
        if not isinstance(storage, _Storage):
            raise UnsafePickleError("tensor rebuild got something other than a storage")
        if not (_is_index(offset) and _is_index_tuple(size) and _is_index_tuple(stride)
                and len(size) == len(stride) <= _MAX_DIMS):
            raise ValueError(f"bad tensor geometry: offset {show(offset)}, size {show(size)}, "
                             f"stride {show(stride)}")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    @property
    def nbytes(self) -> int:
        """Bytes the tensor's own array takes."""
        return math.prod(self.size) * self.storage.dtype.itemsize

    def materialise(self, name: str) -> np.ndarray:
        """The tensor as an array of its own, in native byte order, after checking that the view
        lies inside the storage's values."""
        flat = self.storage.array
        if flat is None:
            raise ValueError(f"tensor {name!r}: storage {self.storage.key!r} is missing from the file")
        native = flat.dtype.newbyteorder("=")
        if math.prod(self.size) == 0:
            return np.zeros(self.size, dtype=native)
        last = self.offset + sum((n - 1) * step for n, step in zip(self.size, self.stride))
        if last >= flat.size:
            raise ValueError(
                f"tensor {name!r} of size {self.size} (stride {self.stride}, offset {self.offset}) "
                f"reaches past its storage of {flat.size} elements: the file is corrupt")
        view = np.ndarray(self.size, flat.dtype, buffer=flat, offset=self.offset * flat.itemsize,
                          strides=tuple(step * flat.itemsize for step in self.stride))
        return np.array(view, dtype=native)


def _is_index(value: Any) -> bool:
    """A plain int that can be a size, stride or offset (bools and huge ints are not)."""
    return type(value) is int and 0 <= value <= _MAX_INDEX


def _is_index_tuple(value: Any) -> bool:
    return type(value) is tuple and all(_is_index(v) for v in value)


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


class _RestrictedUnpickler(pickle._Unpickler):
    """Pure-Python unpickler whose only reachable callables are the stand-ins above, which
    gives no object state through ``BUILD`` except to an OrderedDict, and which bounds how
    deeply tuples nest."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages
        self._tuple_depths: dict[int, int] = {}  # id of each tuple built -> its nesting depth

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
        if not (type(pid) is tuple and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {show(pid)}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType) or type(key) is not str:
            raise UnsafePickleError(f"unexpected persistent id {show(pid)}")
        if type(numel) is not int or numel < 0:  # its bytes are compared with the file's later
            raise ValueError(f"storage {key!r} has a bad element count {show(numel)}")
        if len(pid) == 6 and pid[5] is not None:
            raise ValueError("storage views (legacy view_metadata) are not supported")
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type, key, numel)
        return self._storages[key]

    def _load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if type(target) is not OrderedDict:
            what = {_TensorRef: "a tensor", _Storage: "a storage"}.get(type(target), type(target).__name__)
            raise UnsafePickleError(
                f"refusing to set the state of {what} (pickle BUILD): only an OrderedDict may "
                "receive state, and a tensor's size, stride and offset are fixed when it is built")
        del state  # an OrderedDict's attributes (torch's _metadata) are not needed

    def _push_tuple(self, items: list) -> None:
        depth = 1
        for item in items:
            if type(item) is tuple:
                depth = max(depth, self._tuple_depths.get(id(item), 1) + 1)
        if depth > LIMITS["nesting_depth"]:
            raise ValueError(f"the pickle nests tuples more than {LIMITS['nesting_depth']} deep "
                             "(LIMITS['nesting_depth'])")
        value = tuple(items)
        self._tuple_depths[id(value)] = depth
        self.append(value)

    def _load_tuple(self) -> None:
        self._push_tuple(self.pop_mark())

    def _load_tuple_of(count: int):
        """The loader of TUPLE1, TUPLE2 or TUPLE3: the top ``count`` stack items as a tuple."""
        def load(self) -> None:
            items = self.stack[-count:]
            if len(items) < count:
                raise pickle.UnpicklingError("tuple opcode on a short stack")
            del self.stack[-count:]
            self._push_tuple(items)
        return load

    def _load_bytearray8(self) -> None:
        raise pickle.UnpicklingError("BYTEARRAY8, which torch.save never writes (it would "
                                     "allocate the length it declares before reading)")

    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    dispatch[pickle.TUPLE[0]] = _load_tuple
    dispatch[pickle.TUPLE1[0]] = _load_tuple_of(1)
    dispatch[pickle.TUPLE2[0]] = _load_tuple_of(2)
    dispatch[pickle.TUPLE3[0]] = _load_tuple_of(3)
    del _load_tuple_of


def _unpickle(unpickler: _RestrictedUnpickler) -> Any:
    """Run one pickle, reporting a malformed stream as a ValueError."""
    try:
        return unpickler.load()
    except _MALFORMED_PICKLE as error:
        raise ValueError(f"corrupt or truncated pickle ({type(error).__name__}: "
                         f"{str(error)[:200]})") from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, nbytes: int,
                 archive_size: int) -> bytes:
    """The first ``nbytes`` of a member, once it is known to be stored as torch.save stores
    members: uncompressed, unencrypted and inside the file."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise ValueError(f"zip member {name!r} is encrypted; torch.save writes plain members")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"zip member {name!r} is compressed (method {info.compress_type}); "
                         "torch.save stores members uncompressed")
    if (info.compress_size != info.file_size or info.header_offset < 0
            or info.header_offset + info.file_size > archive_size):
        raise ValueError(f"zip member {name!r} declares {info.file_size} bytes at offset "
                         f"{info.header_offset}, outside the file's {archive_size} bytes")
    if info.file_size < nbytes:
        raise ValueError(f"zip member {name!r} is truncated: expected {nbytes} bytes, "
                         f"found {info.file_size}")
    with archive.open(info) as handle:
        raw = handle.read(nbytes)
    if len(raw) < nbytes:
        raise ValueError(f"zip member {name!r} is truncated: expected {nbytes} bytes, found {len(raw)}")
    return raw


def _read_byteorder(archive: zipfile.ZipFile, info: zipfile.ZipInfo | None, archive_size: int) -> str:
    if info is None:
        return "little"
    raw = _read_member(archive, info, min(info.file_size, 16), archive_size)
    byteorder = raw.decode("ascii", errors="replace")
    if byteorder not in _BYTE_ORDERS:
        raise ValueError(f"zip member {info.filename!r}: byte order {byteorder!r}, expected "
                         "'little' or 'big'")
    return byteorder


def _pickle_member(members: dict[str, zipfile.ZipInfo]) -> zipfile.ZipInfo:
    pickles = [name for name in members if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError("not a torch.save archive (no single <name>/data.pkl)")
    info = members[pickles[0]]
    if info.file_size > LIMITS["pickle_objects"]:
        raise ValueError(f"{info.filename} is {info.file_size} bytes; a weights pickle may take "
                         f"at most {LIMITS['pickle_objects']} (LIMITS['pickle_objects'])")
    return info


def _load_zip(path: os.PathLike | str) -> tuple[Any, int]:
    """The archive's unpickled object (storages read) and the bytes its storages hold."""
    archive_size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            pickle_info = _pickle_member(members)
            prefix = pickle_info.filename[: -len("data.pkl")]
            byteorder = _read_byteorder(archive, members.get(prefix + "byteorder"), archive_size)
            data = _read_member(archive, pickle_info, pickle_info.file_size, archive_size)
            storages: dict[str, _Storage] = {}
            result = _unpickle(_RestrictedUnpickler(io.BytesIO(data), storages))
            stored = sum(storage.nbytes for storage in storages.values())
            if stored > archive_size:
                raise ValueError(f"the storages declare {stored} bytes, more than the file's "
                                 f"{archive_size} bytes hold")
            for key, storage in storages.items():
                info = members.get(f"{prefix}data/{key}")
                if info is None:
                    raise ValueError(f"storage {key!r} is missing (file truncated?)")
                storage.fill(_read_member(archive, info, storage.nbytes, archive_size), byteorder)
    except (zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"corrupt or truncated zip archive ({error})") from None
    return result, stored


def _load_legacy(path: os.PathLike | str) -> tuple[Any, int]:
    """The legacy stream's unpickled object (storages read) and the bytes its storages hold."""
    file_size = os.path.getsize(path)
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as f:
        stream = io.BytesIO(f.read(LIMITS["pickle_objects"]))
        try:
            magic, protocol, sys_info = (_unpickle(_RestrictedUnpickler(stream, storages))
                                         for _ in range(3))
        except UnsafePickleError:
            raise
        except ValueError as error:
            if stream.getvalue()[:2] == b"PK":
                raise ValueError("truncated or corrupt zip archive") from None
            raise ValueError(f"neither a torch zip archive nor a legacy torch file ({error})") from None
        if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
            raise ValueError("neither a torch zip archive nor a legacy torch file")
        little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        if type(little) is not bool:
            raise ValueError(f"sys_info little_endian is {show(little)}, expected true or false")
        byteorder = "little" if little else "big"
        result = _unpickle(_RestrictedUnpickler(stream, storages))
        keys = _unpickle(_RestrictedUnpickler(stream, storages))
        if (type(keys) is not list or not all(type(key) is str for key in keys)
                or set(keys) != set(storages)):
            raise ValueError("storage list does not match the tensors (corrupt file)")
        f.seek(stream.tell())
        for key in keys:
            storage = storages[key]
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"truncated before storage {key!r}")
            numel = int.from_bytes(head, byteorder, signed=True)
            if numel != storage.numel:
                raise ValueError(f"storage {key!r} holds {numel} elements, expected {storage.numel}")
            if storage.nbytes > file_size - f.tell():
                raise ValueError(f"storage {key!r} is truncated: expected {storage.nbytes} bytes, "
                                 f"found {max(0, file_size - f.tell())}")
            storage.fill(f.read(storage.nbytes), byteorder)
    return result, sum(storage.nbytes for storage in storages.values())


def _tensor_refs(obj: Any) -> dict[str, _TensorRef]:
    """The state dict's tensors by name; a dict nested under ``"state_dict"`` or ``"model"``
    (training checkpoints) is unwrapped, and values that are not tensors are left out."""
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(type(k) is str for k in obj):
        raise ValueError(f"expected a state dict (name -> tensor), found {type(obj).__name__}")
    return {name: value for name, value in obj.items() if isinstance(value, _TensorRef)}


def _materialise(refs: dict[str, _TensorRef], stored: int) -> dict[str, np.ndarray]:
    """Copy each tensor out of its storage, once the bytes they take together are known to be
    within LIMITS: views may repeat stored values, but only so much."""
    total = 0
    for name, ref in refs.items():
        if ref.nbytes > LIMITS["tensor_bytes"]:
            raise ValueError(f"tensor {name!r} of size {ref.size} would take {ref.nbytes} bytes, "
                             f"more than LIMITS['tensor_bytes'] ({LIMITS['tensor_bytes']})")
        total += ref.nbytes
    allowed = min(stored + LIMITS["tensor_bytes"], LIMITS["file_tensor_bytes"])
    if total > allowed:
        raise ValueError(f"the tensors would take {total} bytes from {stored} stored; views may "
                         f"repeat stored values up to {allowed} bytes "
                         "(LIMITS['tensor_bytes'], LIMITS['file_tensor_bytes'])")
    return {name: ref.materialise(name) for name, ref in refs.items()}


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
    UnsafePickleError (a ValueError) if the pickle references anything but tensors or changes
    an object's state; ValueError naming the file if it is truncated, corrupt, or asks for more
    than :data:`npmobilenet.validate.LIMITS` allows; FileNotFoundError if it does not exist;
    OSError if it cannot be read (permissions, a folder).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weights file: {path}")
    try:
        obj, stored = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
        return _materialise(_tensor_refs(obj), stored)
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{path}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None

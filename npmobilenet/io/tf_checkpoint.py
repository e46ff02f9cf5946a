"""Read TensorFlow checkpoints (the tensor bundle, V2 format) without TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index`` plus data shards ``PREFIX.data-SSSSS-of-NNNNN``
(what ``tf.train.Saver`` and ``tf.train.Checkpoint`` write; TF-slim's published MobileNets are
such files). The index is an SSTable as LevelDB writes it: data blocks of prefix-compressed
``key -> value`` entries with restart points, an index block pointing at them, and a 48-byte
footer (the two block handles and a magic number). Each block is followed by its compression
type and a masked CRC-32C, checked here. The entry with the empty key is the
``BundleHeaderProto`` (number of shards, byte order); every other key is a tensor name whose
value is a ``BundleEntryProto``: dtype, shape, shard, offset, size and the masked CRC-32C of
the tensor's bytes. Both protos are decoded here from the protobuf wire format by hand.

Everything read from the files is data: every varint, length, offset and count is checked
against the bytes that hold it before it is used; the index is read whole only when smaller
than ``LIMITS["metadata_bytes"]``; an entry must lie inside its shard (checked when the
checkpoint is opened, against the shard's size on disk) and its size must equal its shape times
its item size; a tensor is read only after its size is checked against ``LIMITS``, and its
checksum is verified. The only files opened are the index and the shards its own name implies
(``PREFIX.data-...``); given a folder, its ``checkpoint`` file names the prefix, of which only
the base name is used, inside that folder.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from ..validate import LIMITS
from .crc32c import crc32c, mask

__all__ = ["TFCheckpoint", "BundleEntry", "checkpoint_prefix", "open_checkpoint", "TABLE_MAGIC"]

TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB's kTableMagicNumber, little-endian at the end
_FOOTER = 48
_TRAILER = 5  # compression type (1 byte) + masked CRC-32C (4 bytes)
_COMPRESSION = {0: None, 1: "snappy", 2: "zlib"}

# TensorFlow's DataType enum (types.proto) -> NumPy dtype (little-endian); bfloat16 is widened.
_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?",
           14: "<u2", 17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}
_DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
                7: "string", 8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16",
                17: "uint16", 18: "complex128", 19: "float16", 20: "resource", 21: "variant",
                22: "uint32", 23: "uint64"}
_BFLOAT16 = 14


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives: ``size`` bytes at ``offset`` of shard ``shard``."""

    name: str
    dtype: int  # TensorFlow's DataType code
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored
    sliced: bool  # a partitioned variable's slices (not read here)

    @property
    def dtype_name(self) -> str:
        return _DTYPE_NAMES.get(self.dtype, f"dtype {self.dtype}")


# -- protobuf wire format and SSTable blocks --------------------------------------------------

def _varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise ValueError(f"{what}: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError(f"{what}: varint longer than 10 bytes")


def _fields(data: bytes, what: str) -> list[tuple[int, int, object]]:
    """A protobuf message's ``(field number, wire type, value)``: an int for varints and fixed
    ints, bytes for length-delimited fields."""
    fields, pos, end = [], 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos, end, what)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos, end, what)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise ValueError(f"{what}: truncated field {number}")
            value, pos = int.from_bytes(data[pos:pos + width], "little"), pos + width
        elif wire == 2:
            length, pos = _varint(data, pos, end, what)
            if length > end - pos:
                raise ValueError(f"{what}: field {number} claims {length} bytes, "
                                 f"{end - pos} remain")
            value, pos = data[pos:pos + length], pos + length
        else:
            raise ValueError(f"{what}: unsupported protobuf wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _int64(value: int) -> int:
    """A varint as the signed int64 protobuf encodes (negative numbers take 10 bytes)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def _block_handle(data: bytes, pos: int, end: int, what: str) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(data, pos, end, what)
    size, pos = _varint(data, pos, end, what)
    return (offset, size), pos


def _block(index: bytes, handle: tuple[int, int], what: str) -> bytes:
    """A block's contents, once its place, compression and checksum are checked."""
    offset, size = handle
    limit = len(index) - _FOOTER
    if offset + size + _TRAILER > limit:
        raise ValueError(f"{what} at offset {offset} of {size} bytes reaches past the index's "
                         f"{limit} bytes of blocks (truncated index?)")
    contents = index[offset:offset + size]
    kind = index[offset + size]
    stored = int.from_bytes(index[offset + size + 1:offset + size + _TRAILER], "little")
    if mask(crc32c(index[offset:offset + size + 1])) != stored:
        raise ValueError(f"{what} at offset {offset}: checksum mismatch (corrupt index)")
    if kind not in _COMPRESSION:
        raise ValueError(f"{what} at offset {offset}: unknown compression type {kind}")
    if _COMPRESSION[kind] is not None:
        raise ValueError(f"{what} at offset {offset} is {_COMPRESSION[kind]}-compressed; only "
                         "uncompressed tables (what TensorFlow's bundle writer makes) are read")
    return contents


def _entries(block: bytes, what: str) -> list[tuple[bytes, bytes]]:
    """A block's ``(key, value)`` pairs: each key shares a prefix with the previous one."""
    if len(block) < 4:
        raise ValueError(f"{what}: {len(block)} bytes, too short for a block")
    restarts = int.from_bytes(block[-4:], "little")
    if restarts == 0 or 4 * (restarts + 1) > len(block):
        raise ValueError(f"{what}: {restarts} restart points do not fit in {len(block)} bytes")
    end = len(block) - 4 * (restarts + 1)
    pairs, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos, end, what)
        unshared, pos = _varint(block, pos, end, what)
        length, pos = _varint(block, pos, end, what)
        if shared > len(key) or unshared + length > end - pos:
            raise ValueError(f"{what}: an entry reaches past its block (corrupt index)")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        pairs.append((key, block[pos:pos + length]))
        pos += length
    return pairs


def _read_table(index: bytes) -> list[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of an SSTable held in ``index``, in order."""
    if len(index) < _FOOTER:
        raise ValueError(f"{len(index)} bytes, shorter than an SSTable footer ({_FOOTER}); "
                         "truncated index?")
    footer = index[-_FOOTER:]
    magic = int.from_bytes(footer[-8:], "little")
    if magic != TABLE_MAGIC:
        raise ValueError(f"bad magic number {magic:#018x} (expected {TABLE_MAGIC:#018x}): not a "
                         "TensorFlow checkpoint index, or truncated")
    _, pos = _block_handle(footer, 0, _FOOTER - 8, "footer")  # the metaindex: unused
    index_handle, _ = _block_handle(footer, pos, _FOOTER - 8, "footer")
    pairs = []
    for separator, handle in _entries(_block(index, index_handle, "index block"), "index block"):
        data_handle, _ = _block_handle(handle, 0, len(handle), "index block")
        pairs.extend(_entries(_block(index, data_handle, "data block"), "data block"))
    return pairs


# -- the bundle --------------------------------------------------------------------------------

def _header(value: bytes) -> tuple[int, str]:
    shards, byteorder = 1, "little"
    for number, wire, field in _fields(value, "bundle header"):
        if number == 1 and wire == 0:
            shards = _int64(field)
        elif number == 2 and wire == 0:
            if field not in (0, 1):
                raise ValueError(f"bundle header: unknown byte order {field}")
            byteorder = "little" if field == 0 else "big"
    if not 1 <= shards <= 99999:
        raise ValueError(f"bundle header: {shards} shards (expected 1 to 99999)")
    return shards, byteorder


def _shape(value: bytes, name: str) -> tuple[int, ...]:
    dims = []
    for number, wire, field in _fields(value, f"tensor {name!r} shape"):
        if number == 2 and wire == 2:
            size = 0
            for dim_number, dim_wire, dim in _fields(field, f"tensor {name!r} shape"):
                if dim_number == 1 and dim_wire == 0:
                    size = _int64(dim)
            if size < 0:
                raise ValueError(f"tensor {name!r}: dimension of unknown size ({size})")
            dims.append(size)
        elif number == 3 and wire == 0 and field:
            raise ValueError(f"tensor {name!r}: shape of unknown rank")
    if len(dims) > 32:
        raise ValueError(f"tensor {name!r}: {len(dims)} dimensions")
    return tuple(dims)


def _entry(name: str, value: bytes, shards: int) -> BundleEntry:
    found = {"dtype": 0, "shape": (), "shard": 0, "offset": 0, "size": 0, "crc32c": None,
             "sliced": False}
    for number, wire, field in _fields(value, f"tensor {name!r}"):
        if number == 1 and wire == 0:
            found["dtype"] = field
        elif number == 2 and wire == 2:
            found["shape"] = _shape(field, name)
        elif number in (3, 4, 5) and wire == 0:
            found[{3: "shard", 4: "offset", 5: "size"}[number]] = _int64(field)
        elif number == 6 and wire == 5:
            found["crc32c"] = field
        elif number == 7 and wire == 2:
            found["sliced"] = True
    entry = BundleEntry(name, **found)
    if not 0 <= entry.shard < shards:
        raise ValueError(f"tensor {name!r}: shard {entry.shard}, but the checkpoint has {shards}")
    if entry.offset < 0 or entry.size < 0:
        raise ValueError(f"tensor {name!r}: negative offset {entry.offset} or size {entry.size}")
    if entry.dtype in _DTYPES and not entry.sliced:
        expected = math.prod(entry.shape) * np.dtype(_DTYPES[entry.dtype]).itemsize
        if entry.size != expected:
            raise ValueError(f"tensor {name!r}: {entry.size} bytes stored for shape "
                             f"{entry.shape} of {entry.dtype_name} ({expected} bytes)")
    return entry


def checkpoint_prefix(path: os.PathLike | str) -> str:
    """The prefix of the checkpoint at ``path``: a prefix, its ``.index`` or a data shard, or a
    folder (its ``checkpoint`` file's latest checkpoint, or its only ``.index``).

    Raises FileNotFoundError when no index is found.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.join(path, _latest_in_folder(path))
    match = re.fullmatch(r"(.*)\.(?:index|data-\d{5}-of-\d{5})", path)
    prefix = match.group(1) if match else path
    if not os.path.isfile(prefix + ".index"):
        raise FileNotFoundError(f"no such checkpoint: {path} (no {prefix}.index)")
    return prefix


def _latest_in_folder(folder: str) -> str:
    """The base name of the folder's latest checkpoint: ``model_checkpoint_path`` in its
    ``checkpoint`` file (only the base name counts: nothing outside the folder is read)."""
    state = os.path.join(folder, "checkpoint")
    if os.path.isfile(state):
        with open(state, "rb") as handle:
            text = handle.read(1 << 20).decode("utf8", errors="replace")
        match = re.search(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\\n]|\\.)*)"', text, re.M)
        if match is None:
            raise ValueError(f"{state}: no model_checkpoint_path line")
        name = os.path.basename(match.group(1).replace("\\\\", "\\").replace('\\"', '"'))
        if not name or not os.path.isfile(os.path.join(folder, name + ".index")):
            raise FileNotFoundError(f"{state} names checkpoint {match.group(1)!r}, but "
                                    f"{os.path.join(folder, name + '.index')} does not exist")
        return name
    indexes = sorted(entry[:-len(".index")] for entry in os.listdir(folder) if entry.endswith(".index"))
    if len(indexes) != 1:
        raise FileNotFoundError(f"{folder}: no 'checkpoint' file and {len(indexes)} .index files; "
                                "name the checkpoint (its prefix or .index file)")
    return indexes[0]


class TFCheckpoint:
    """An opened checkpoint: every entry known from the index, tensors read on demand.

    Opening checks the index (footer, block checksums, entries) and that every entry lies
    inside an existing shard; :meth:`read` checks the tensor's checksum.
    """

    def __init__(self, prefix: str):
        self.prefix = prefix
        index_path = prefix + ".index"
        size = os.path.getsize(index_path)
        if size > LIMITS["metadata_bytes"]:
            raise ValueError(f"{index_path}: {size} bytes, more than LIMITS['metadata_bytes'] "
                             f"({LIMITS['metadata_bytes']}) for an index")
        with open(index_path, "rb") as handle:
            index = handle.read(size)
        try:
            pairs = _read_table(index)
            if not pairs or pairs[0][0] != b"":
                raise ValueError("no bundle header (the entry with the empty key)")
            self.num_shards, self.byteorder = _header(pairs[0][1])
            self.entries: dict[str, BundleEntry] = {}
            for key, value in pairs[1:]:
                try:
                    name = key.decode("utf8")
                except UnicodeDecodeError:
                    raise ValueError(f"a tensor name is not UTF-8: {key[:80]!r}") from None
                if name in self.entries or not name:
                    raise ValueError(f"tensor name {name!r} appears twice")
                self.entries[name] = _entry(name, value, self.num_shards)
        except ValueError as error:
            raise ValueError(f"{index_path}: {error}") from None
        self._check_shards()

    def shard_path(self, shard: int) -> str:
        return f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}"

    def _check_shards(self) -> None:
        sizes = {}
        for entry in self.entries.values():
            path = self.shard_path(entry.shard)
            if entry.shard not in sizes:
                if not os.path.isfile(path):
                    raise ValueError(f"{self.prefix}.index: data shard {path} is missing (tensor "
                                     f"{entry.name!r} is stored there)")
                sizes[entry.shard] = os.path.getsize(path)
            if entry.offset + entry.size > sizes[entry.shard]:
                raise ValueError(f"{path}: tensor {entry.name!r} at offset {entry.offset} of "
                                 f"{entry.size} bytes reaches past the shard's end "
                                 f"({sizes[entry.shard]} bytes; truncated?)")

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as an ndarray (bfloat16 widened to float32).

        Raises ValueError naming the shard for a dtype that is not numeric, a partitioned
        variable, a size beyond ``LIMITS["tensor_bytes"]`` or a checksum mismatch.
        """
        entry = self.entries[name]
        path = self.shard_path(entry.shard)
        if entry.sliced:
            raise ValueError(f"{path}: tensor {name!r} is a partitioned variable (saved in "
                             "slices), which is not read")
        if entry.dtype not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {entry.dtype_name}, not a "
                             "numeric array")
        if entry.size > LIMITS["tensor_bytes"]:
            raise ValueError(f"{path}: tensor {name!r} of shape {entry.shape} takes {entry.size} "
                             f"bytes, more than LIMITS['tensor_bytes'] ({LIMITS['tensor_bytes']})")
        with open(path, "rb") as handle:
            handle.seek(entry.offset)
            raw = handle.read(entry.size)
        if len(raw) != entry.size:
            raise ValueError(f"{path}: tensor {name!r} is truncated ({len(raw)} of {entry.size} bytes)")
        if entry.crc32c is not None and mask(crc32c(raw)) != entry.crc32c:
            raise ValueError(f"{path}: tensor {name!r}: checksum mismatch (corrupt data)")
        dtype = np.dtype(_DTYPES[entry.dtype]).newbyteorder("<" if self.byteorder == "little" else ">")
        array = np.frombuffer(raw, dtype=dtype).reshape(entry.shape)
        if entry.dtype == _BFLOAT16:
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array.astype(dtype.newbyteorder("="))


def open_checkpoint(path: os.PathLike | str) -> TFCheckpoint:
    """Open the checkpoint at ``path`` (see :func:`checkpoint_prefix`).

    Raises FileNotFoundError, or ValueError naming the file and the problem: a truncated index,
    a bad magic number, a checksum mismatch, a compressed block, an entry that does not fit its
    shard or a missing shard.
    """
    return TFCheckpoint(checkpoint_prefix(path))

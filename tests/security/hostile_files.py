"""Builders for hostile weight files: ``.pth`` pickles written opcode by opcode inside zip archives
laid out as ``torch.save`` lays them out, and Keras HDF5 files edited to point outside
themselves. Used by the reader tests and the fuzzer."""

from __future__ import annotations

import pickle
import shutil
import zipfile
import zlib
from pathlib import Path

import h5py
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

FIXTURES = Path(__file__).parents[1] / "fixtures"
TORCH_FIXTURE = FIXTURES / "torchvision_mobilenet_v2.pth"
KERAS_FIXTURE = FIXTURES / "keras_mobilenet_v2.h5"

# A byte pattern that must never leave the file it was put in.
SECRET = b"SECRET-0123456789" * 256


# -- .pth ----------------------------------------------------------------------------------------

def value(obj) -> bytes:
    """Protocol-2 opcodes pushing a plain object (no PROTO header, no STOP)."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def global_(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tensor(key: str, numel: int, offset: int, size: tuple, stride: tuple,
           storage: str = "FloatStorage") -> bytes:
    """Opcodes pushing ``_rebuild_tensor_v2(storage, offset, size, stride, False, {})`` as
    torch.save writes it; the storage is the persistent id ('storage', type, key, 'cpu', numel)."""
    persistent_id = (b"(" + value("storage") + global_("torch", storage) + value(key)
                     + value("cpu") + value(numel) + b"tQ")
    return (global_("torch._utils", "_rebuild_tensor_v2") + b"(" + persistent_id + value(offset)
            + value(size) + value(stride) + b"\x89}tR")


def state_dict(entries: dict[str, bytes]) -> bytes:
    """A whole pickle: an OrderedDict holding each name -> the object its opcodes push."""
    items = b"".join(value(name) + opcodes + b"s" for name, opcodes in entries.items())
    return b"\x80\x02" + global_("collections", "OrderedDict") + b")R" + items + b"."


def write_pth(path: Path, pickled: bytes, storages: dict[str, bytes], byteorder: bytes = b"little") -> Path:
    """A zip archive as torch.save writes it: ``archive/data.pkl``, ``archive/byteorder`` and one
    stored member per storage under ``archive/data/``."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", byteorder)
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
    return path


def rewrite_zip(source: Path, target: Path, change) -> Path:
    """Copy a zip archive member by member, ``change(name, data)`` giving each member's new data."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for info in original.infolist():
            copy.writestr(info.filename, change(info.filename, original.read(info)))
    return target


def deflate_bomb(path: Path, declared: int) -> Path:
    """A torch-like archive whose one storage is a deflated member that inflates to ``declared``
    bytes of zeros, built from one repeated 1 MiB block so it takes no time to write."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream = block * (declared >> 20) + compressor.flush()
    numel = declared // 4
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", state_dict({"w": tensor("0", numel, 0, (numel,), (1,))}))
        archive.writestr("archive/byteorder", b"little")
        info = zipfile.ZipInfo("archive/data/0")
        with archive.open(info, "w", force_zip64=True) as member:
            member.write(stream)
        # The central directory (what readers trust) now says: deflated, `declared` bytes.
        info.compress_type, info.file_size = zipfile.ZIP_DEFLATED, declared
    return path


# -- Keras HDF5 ----------------------------------------------------------------------------------

def keras_copy(path: Path) -> Path:
    """A copy of the Keras MobileNetV2 fixture to edit (Keras-2 layout)."""
    shutil.copyfile(KERAS_FIXTURE, path)
    return path


def replace_dataset(path: Path, name: str, **create) -> None:
    """Delete dataset ``name`` and create ``h5py.Group.create_dataset(name, **create)`` there."""
    with h5py.File(path, "r+") as f:
        del f[name]
        f.create_dataset(name, **create)


def write_zero_chunks(path: Path, name: str, shape: tuple, chunk: int) -> None:
    """A gzip-chunked float32 dataset ``name`` whose every chunk is written, pre-compressed, as
    the same few bytes of deflated zeros: gigabytes when read, kilobytes on disk."""
    with h5py.File(path, "r+") as f:
        if name in f:
            del f[name]
        dataset = f.create_dataset(name, shape=shape, dtype="f4", chunks=(chunk,), compression="gzip")
        compressed = zlib.compress(bytes(chunk * 4))
        for start in range(0, shape[0], chunk):
            dataset.id.write_direct_chunk((start,), compressed)


def set_values(path: Path, name: str, values) -> None:
    with h5py.File(path, "r+") as f:
        f[name][...] = np.asarray(values, dtype=f[name].dtype)


# -- model files ---------------------------------------------------------------------------------

def edited_model_file(source, target, metadata=None, tensors=None):
    """A copy of a model file with metadata fields and tensors replaced."""
    with safe_open(source, framework="numpy") as handle:
        original = handle.metadata()
    save_file({**load_file(source), **(tensors or {})}, target, metadata={**original, **(metadata or {})})
    return target

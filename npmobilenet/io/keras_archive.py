"""Read Keras 3 ``.keras`` archives: a zip holding ``config.json`` (the model's structure),
``metadata.json`` and ``model.weights.h5`` (the ``.weights.h5`` layout).

The config is data: it is parsed with ``json`` and only read for layer names, classes and the
classifier's settings; the custom objects, lambdas and modules it may name are never imported,
deserialised or run (what ``keras.saving.load_model`` would do, unless ``safe_mode`` stopped
it). Members are read only if they are unencrypted, stored or deflated, inside the file, and
their declared sizes are within ``LIMITS`` (``metadata_bytes`` for the config,
``file_tensor_bytes`` for the weights) and ``zip_ratio`` times their compressed sizes; a member
that inflates past its declared size is refused while it is read.
"""

from __future__ import annotations

import os
import zipfile

from ..validate import LIMITS
from .keras_h5 import KerasWeights, json_document, open_h5_bytes, read_h5_handle

__all__ = ["is_keras_archive", "read_keras_archive"]

CONFIG, WEIGHTS = "config.json", "model.weights.h5"


def is_keras_archive(path: os.PathLike | str) -> bool:
    """A zip archive holding a Keras ``config.json``."""
    try:
        with zipfile.ZipFile(path) as archive:
            return CONFIG in archive.NameToInfo
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def _member(archive: zipfile.ZipFile, name: str, limit: int, file_size: int, what: str) -> bytes:
    info = archive.NameToInfo.get(name)
    if info is None:
        raise ValueError(f"no {name!r} in the archive: not a Keras 3 .keras file"
                         + (" (sharded weights are not read)" if name == WEIGHTS else ""))
    if info.flag_bits & 0x1:
        raise ValueError(f"member {name!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"member {name!r} uses compression method {info.compress_type}; only "
                         "stored or deflated members are read")
    if info.header_offset + info.compress_size > file_size:
        raise ValueError(f"member {name!r} declares {info.compress_size} bytes at offset "
                         f"{info.header_offset}, outside the file's {file_size} bytes")
    if info.file_size > limit:
        raise ValueError(f"member {name!r} declares {info.file_size} bytes, more than "
                         f"LIMITS[{what!r}] ({limit})")
    if info.file_size > LIMITS["zip_ratio"] * max(info.compress_size, 1):
        raise ValueError(f"member {name!r} declares {info.file_size} bytes from "
                         f"{info.compress_size} compressed, more than LIMITS['zip_ratio'] "
                         f"({LIMITS['zip_ratio']}) times as many")
    with archive.open(info) as handle:
        raw = handle.read(info.file_size + 1)
    if len(raw) != info.file_size:
        raise ValueError(f"member {name!r} holds {len(raw)} bytes, not the {info.file_size} it declares")
    return raw


def read_keras_archive(path: os.PathLike | str) -> KerasWeights:
    """Every layer's weights (by layer name) and the parsed config of a ``.keras`` archive.

    Raises ValueError naming the file for a corrupt or truncated archive, a member refused as
    above, a config that is not a JSON object, or weights :mod:`.keras_h5` refuses.
    """
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json_document(_member(archive, CONFIG, LIMITS["metadata_bytes"], size,
                                           "metadata_bytes"), CONFIG)
            raw = _member(archive, WEIGHTS, LIMITS["file_tensor_bytes"], size, "file_tensor_bytes")
        try:
            handle = open_h5_bytes(raw)
        except OSError as error:
            raise ValueError(f"{WEIGHTS} is not a readable HDF5 file: {error}") from None
        with handle:
            return read_h5_handle(handle, config)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(f"{path}: corrupt or truncated .keras archive ({error})") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None

"""What a weights file is, from its bytes: the format (magic numbers, archive members), then
which framework wrote it and which architecture it holds (tensor names and shapes).

Only the first bytes, the zip directory or the checkpoint index's footer are looked at to tell
the format; nothing is parsed beyond what the format's reader checks anyway.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterable

from .keras_h5 import HDF5_SIGNATURE
from .tf_checkpoint import TABLE_MAGIC

__all__ = ["FORMATS", "sniff_format", "check_source", "torch_source", "guess_arch"]

# format -> (what a user calls it, the sources whose files take that format)
FORMATS = {
    "pth": ("a PyTorch .pth file", ("torchvision", "timm")),
    "safetensors": ("a safetensors file", ("timm",)),
    "keras-h5": ("a Keras HDF5 file", ("keras",)),
    "keras-archive": ("a Keras .keras archive", ("keras",)),
    "tf-checkpoint": ("a TensorFlow checkpoint", ("tf-slim",)),
}
_LEGACY_TORCH = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickled torch magic 0x1950a86a20f9469cfc6c


def sniff_format(path: os.PathLike | str) -> str | None:
    """The format of the file (or checkpoint folder/prefix) at ``path``, a key of
    :data:`FORMATS`, or None when it is none of them."""
    path = os.fspath(path)
    if os.path.isdir(path):
        entries = os.listdir(path)
        return "tf-checkpoint" if "checkpoint" in entries or any(e.endswith(".index") for e in entries) else None
    if not os.path.exists(path) and os.path.isfile(path + ".index"):
        return "tf-checkpoint"
    if re.search(r"\.data-\d{5}-of-\d{5}$", path) and os.path.isfile(re.sub(r"\.data-\d{5}-of-\d{5}$", ".index", path)):
        return "tf-checkpoint"
    if not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
        tail = b""
        if size >= 48:
            handle.seek(size - 8)
            tail = handle.read(8)
    if head.startswith(HDF5_SIGNATURE):
        return "keras-h5"
    if head.startswith(b"PK\x03\x04"):
        return _zip_format(path)
    if head.startswith(_LEGACY_TORCH):
        return "pth"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    if tail and int.from_bytes(tail, "little") == TABLE_MAGIC:
        return "tf-checkpoint"
    return None


def _zip_format(path: str) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):  # the reader names what is wrong with it
        return "keras-archive" if path.endswith(".keras") else "pth"
    if "config.json" in names:
        return "keras-archive"
    if any(name.endswith("/data.pkl") for name in names):
        return "pth"
    return None


def check_source(path: os.PathLike | str, source: str | None) -> str | None:
    """The file's format, after checking that ``source`` can have written it.

    Raises ValueError naming the format the file looks like and the ``--from`` that reads it.
    """
    found = sniff_format(path)
    if found is None or source is None:
        return found
    description, sources = FORMATS[found]
    if source not in sources:
        raise ValueError(f"{path}: looks like {description}, not a {source} file; use "
                         f"{' or '.join(f'--from {s}' for s in sources)}")
    return found


def torch_source(names: Iterable[str]) -> str:
    """``timm`` for timm's MobileNetV4 names (``conv_stem``, ``blocks.*``), else ``torchvision``."""
    return "timm" if any(n.startswith(("conv_stem.", "blocks.")) for n in names) else "torchvision"


def _blocks(names: Iterable[str], pattern: str) -> int:
    return len({m.group(1) for n in names if (m := re.match(pattern, n))})


def guess_arch(source: str, names: Iterable[str]) -> str:
    """The architecture a source's tensor names describe; raises ValueError when none fits."""
    names = list(names)
    if source == "torchvision":
        if any(".conv." in n for n in names if n.startswith("features.")):
            return "mobilenet_v2"
        blocks = _blocks(names, r"features\.(\d+)\.block\.")
        if blocks:
            return "mobilenet_v3_large" if blocks > 11 else "mobilenet_v3_small"
    elif source == "timm":
        if any(".pw_exp." in n or ".dw_mid." in n for n in names):
            return "mobilenet_v4_conv_small"
    elif source == "keras":
        layers = {n.split("/")[0] for n in names}
        if "conv_dw_1" in layers:
            return "mobilenet_v1"
        if "block_1_expand" in layers or "Conv1" in layers:
            return "mobilenet_v2"
        if "expanded_conv_depthwise" in layers:
            large = "expanded_conv_14_project" in layers
            minimalistic = not any("squeeze_excite" in layer for layer in layers)
            return f"mobilenet_v3_{'large' if large else 'small'}{'_minimalistic' if minimalistic else ''}"
    elif source == "tf-slim":
        for scope, arch in (("MobilenetV1/", "mobilenet_v1"), ("MobilenetV2/", "mobilenet_v2")):
            if any(scope in n for n in names):
                return arch
    shown = ", ".join(names[:5])
    raise ValueError(f"cannot tell which MobileNet this {source} file holds (tensors {shown}, ...); "
                     "give --arch")

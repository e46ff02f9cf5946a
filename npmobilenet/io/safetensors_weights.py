"""Read plain safetensors weight files (timm, Hugging Face) into NumPy arrays.

The format is a length-prefixed JSON header (names, dtypes, shapes, byte offsets) and raw
little-endian bytes; the safetensors library checks that every tensor's offsets lie inside the
file, in order and without overlap, and that shape times dtype equals its byte range, so what is
allocated is bounded by what the file holds. Nothing in the file is executed.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["read_safetensors"]


def read_safetensors(path: os.PathLike | str) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, by name.

    Raises FileNotFoundError, or ValueError naming the file when it is not a readable
    safetensors file (truncated, corrupt, an unsupported dtype).
    """
    from safetensors import SafetensorError, safe_open

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weights file: {path}")
    try:
        with safe_open(path, framework="numpy") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a readable safetensors file (truncated or corrupt?): "
                         f"{error}") from None

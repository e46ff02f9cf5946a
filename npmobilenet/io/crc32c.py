"""CRC-32C (Castagnoli), the checksum of TensorFlow checkpoints, with TensorFlow's masking.

A table-driven loop compiled with Numba (already a dependency), so checking a checkpoint's
tensors costs about as much as reading them; no checksum package is needed.
"""

from __future__ import annotations

import numba
import numpy as np

from ..kernels.jit_cache import CACHE

__all__ = ["crc32c", "mask"]

_POLYNOMIAL = 0x82F63B78  # CRC-32C, bit-reflected


def _table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint64)
    for _ in range(8):
        table = np.where(table & 1, (table >> np.uint64(1)) ^ np.uint64(_POLYNOMIAL), table >> np.uint64(1))
    return table.astype(np.int64)


_TABLE = _table()


@numba.njit(cache=CACHE)
def _update(crc: int, data: np.ndarray, table: np.ndarray) -> int:
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data: bytes | bytearray | memoryview | np.ndarray, crc: int = 0) -> int:
    """The CRC-32C of ``data`` (any bytes-like object), continuing from ``crc``."""
    array = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    return int(_update(crc, array, _TABLE))


def mask(crc: int) -> int:
    """TensorFlow's (and LevelDB's) stored form of a CRC: rotated and offset, so that the CRC of
    data holding CRCs stays meaningful."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


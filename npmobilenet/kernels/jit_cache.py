"""Where Numba keeps compiled kernels, so that no install layout makes importing fail.

``numba.njit(cache=True)`` writes beside the source (``__pycache__``) or under the user's cache
folder, and raises at import ("no locator available") when neither is writable: a read-only
install run by a user without a writable HOME. Then the kernels are cached in a private folder
under the system temporary directory, and if even that cannot be had, compiled afresh in each
process (correct, only slower to start).

The private folder must belong to this user and be closed to others: Numba's cache index is
pickled, so a folder another user could write into would let them run code here.
"""

from __future__ import annotations

import os
import stat
import tempfile
import warnings

import numba

__all__ = ["CACHE"]


def _probe() -> int:
    return 0


def _cache_works() -> bool:
    """Whether Numba finds a writable cache for functions defined in this folder."""
    try:
        numba.njit(cache=True)(_probe)
    except RuntimeError:
        return False
    return True


def _private_folder() -> str | None:
    """``$TMPDIR/npmobilenet-numba-<uid>``, created 0700, or None if it is not safely ours."""
    folder = os.path.join(tempfile.gettempdir(), f"npmobilenet-numba-{os.getuid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
                or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            return None
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return None
    return folder


def _choose() -> bool:
    if _cache_works():
        return True
    folder = _private_folder()
    if folder is not None:
        numba.config.CACHE_DIR = folder
        if _cache_works():
            return True
    warnings.warn("no writable folder for Numba's kernel cache (set NUMBA_CACHE_DIR to one): "
                  "kernels are compiled afresh in every process", RuntimeWarning, stacklevel=2)
    return False


CACHE = _choose()

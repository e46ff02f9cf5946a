"""Process-wide settings for speed: numpy's OpenBLAS, and glibc's allocator (standard library only).

OpenBLAS reads its settings from the environment once, when numpy is first imported, so
:func:`configure_openblas` runs at the top of ``npmobilenet/__init__.py``; if numpy was imported
before npmobilenet, it changes nothing (set the variables yourself then). A user's own setting
always wins.

- ``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS workers otherwise busy-wait about 0.1 s after each
  GEMM, taking the cores from Numba's threads that run the next kernel.
- ``OPENBLAS_CORETYPE``: OpenBLAS releases before OpenMathLib/OpenBLAS#6033 (September 2026)
  do not know AMD family 26 (Zen 5) and pick their AVX2 "Haswell" kernels on it, although the
  CPU has AVX-512; every GEMM then runs at about 0.6x the speed of the AVX-512 kernels
  (measured on this project's 2-core Zen 5 machines: a 196x512x512 SGEMM took 530 us with
  Haswell's kernels and 337 us with SkylakeX's). On such a CPU the AVX-512 kernels are chosen
  as OpenBLAS itself chooses them for Zen 4: Cooperlake's with AVX-512 BF16, else SkylakeX's.

glibc's malloc hands arrays above its mmap threshold (at most 32 MiB) straight back to the
system when they are freed, so the next training step's activations of the same size are
mapped anew and fault in page by page: about 30,000 page faults and 80-200 ms of a 400 ms
MobileNet v2 training step at batch 16. :func:`reuse_freed_memory` keeps freed memory in the
process for the next step instead (no page faults, the same peak). It changes the whole
process, so the command line calls it and library code does not; call it yourself in a
program that trains or predicts in a loop.
"""

from __future__ import annotations

import ctypes
import os
import sys

# The AVX-512 subsets OpenBLAS's SkylakeX kernels need (cpuinfo flag names).
SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
FIRST_UNKNOWN_AMD_FAMILY = 26  # Zen 5


def cpu_info(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's ``key: value`` lines from ``path`` ({} where there is none)."""
    info = {}
    try:
        with open(path, encoding="ascii", errors="replace") as lines:
            for line in lines:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        return {}
    return info


def avx512_coretype(info: dict[str, str]) -> str | None:
    """The OpenBLAS core type to force for the CPU ``info`` describes, or None to let OpenBLAS
    choose: only AMD families it does not know that have the AVX-512 it needs."""
    flags = set(info.get("flags", "").split())
    try:
        family = int(info.get("cpu family", ""))
    except ValueError:
        return None
    if info.get("vendor_id") != "AuthenticAMD" or family < FIRST_UNKNOWN_AMD_FAMILY \
            or not SKYLAKEX_FLAGS <= flags:
        return None
    return "Cooperlake" if "avx512_bf16" in flags else "SkylakeX"


def configure_openblas(environ=os.environ) -> None:
    """Set OpenBLAS's variables (see the module docstring) unless already set."""
    environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    if sys.platform.startswith("linux") and "OPENBLAS_CORETYPE" not in environ:
        coretype = avx512_coretype(cpu_info())
        if coretype is not None:
            environ["OPENBLAS_CORETYPE"] = coretype


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse rather than return it to the system
    (see the module docstring); True if it took effect (glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(parameter, value) == 1 for parameter, value in (
        (M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, 1 << 31), (M_TOP_PAD, 64 << 20)))


def openblas_core() -> str | None:
    """The kernel family numpy's loaded OpenBLAS runs (e.g. ``"SkylakeX"``), or None when numpy
    is not linked to an OpenBLAS that says (Linux only: read from the process's mapped files)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        library = ctypes.CDLL(path)
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                       "openblas_get_corename"):
            function = getattr(library, symbol, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                return function().decode("ascii", "replace")
    return None

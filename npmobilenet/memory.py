"""Memory estimates, checked before a large allocation rather than discovered by the OOM killer.

A spec, a model file or a batch can ask for more memory than the machine has (a 65,536-channel
layer, a batch of 4,096 images at 1024x1024). The graph knows every shape before anything runs,
so the bytes a request needs are estimated first and compared with what the process can still
get: the kernel's ``MemAvailable``, or less under an address-space limit (``ulimit -v``).
"""

from __future__ import annotations

import os
import resource

__all__ = ["InsufficientMemory", "available_bytes", "require"]

# Below this an estimate is not worth a look at /proc: small requests always pass.
CHECK_ABOVE = 256 << 20


class InsufficientMemory(MemoryError):
    """A request's estimated memory exceeds what this process can get; nothing was allocated."""


def available_bytes() -> int | None:
    """Bytes this process can still allocate, or None where the system does not say."""
    candidates = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
                    break
    except OSError:
        pass
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit != resource.RLIM_INFINITY:
        candidates.append(max(0, limit - _address_space_used()))
    return min(candidates) if candidates else None


def _address_space_used() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def require(what: str, nbytes: int) -> None:
    """Raise :class:`InsufficientMemory` naming ``what`` and the estimate if ``nbytes`` cannot fit."""
    if nbytes < CHECK_ABOVE:
        return
    available = available_bytes()
    if available is not None and nbytes > available:
        raise InsufficientMemory(f"{what} needs about {_mib(nbytes)} but only {_mib(available)} "
                                 f"is available")


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"

"""Run the ``npmobilenet`` command in a subprocess, optionally under a memory limit, and check
that a failure is exactly one ``npmobilenet: error:`` line."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

# Address space a normal command needs (numpy, Numba/LLVM, a small model): about 0.6 GiB.
MEMORY_LIMIT_MIB = 1536


def run_cli(*args, memory_mib: int | None = MEMORY_LIMIT_MIB, file_size: int | None = None,
            cwd=None, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m npmobilenet.cli ARGS`` with its address space capped at ``memory_mib`` and,
    with ``file_size``, its file writes capped at that many bytes (SIGXFSZ ignored, so a write
    past the cap fails with EFBIG as on a full file system)."""

    def limits():
        if memory_mib is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mib << 20, memory_mib << 20))
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return subprocess.run([sys.executable, "-m", "npmobilenet.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limits,
                          cwd=cwd, env={**os.environ, **(env or {})})


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str, code: int = 1) -> str:
    """The run failed with ``code`` and one stderr line naming every fragment; returns the line."""
    lines = result.stderr.splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("npmobilenet: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]

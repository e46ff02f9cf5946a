"""From an exception to the one line a user reads, and the exit code scripts test.

Exit codes, as argparse, git and pip have taught users to expect:

====  ==============================================================================
0     success
1     bad input (a file, a folder, a value) or environment (disk full, permissions)
2     usage: an unknown flag or a value out of its range (argparse prints the usage)
130   interrupted (Ctrl-C)
141   the output pipe was closed by its reader (``npmobilenet evaluate | head``)
====  ==============================================================================
"""

from __future__ import annotations

import errno
import re
import sys

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

# What to do about an operating-system error, by errno.
_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device; free some space or write somewhere else",
    errno.EDQUOT: "disk quota exceeded; free some space or write somewhere else",
    errno.EFBIG: "file too large for this file system or for the process's file-size limit "
                 "(ulimit -f)",
    errno.EACCES: "permission denied; check the permissions or choose another location",
    errno.EPERM: "operation not permitted; check the permissions or choose another location",
    errno.EROFS: "read-only file system; choose a writable location",
    errno.EISDIR: "is a directory, expected a file",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files (ulimit -n)",
}


def report(message: str) -> None:
    """Print ``npmobilenet: error: MESSAGE`` as one line on stderr."""
    print(f"npmobilenet: error: {one_line(message)}", file=sys.stderr, flush=True)


def one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe(error: BaseException) -> tuple[str, int]:
    """The message and exit code for ``error``."""
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and error.errno:
        # A rename names its destination second: that is the path the user gave.
        path = error.filename2 if error.filename2 is not None else error.filename
        return _os_message(error.errno, path, error.strerror), EXIT_FAILURE
    code = _os_error_code(error)
    if code is not None:  # safetensors reports OS errors in its own exception's text
        return _os_message(code, None, str(error)), EXIT_FAILURE
    if isinstance(error, MemoryError):
        return ("out of memory" + (f": {error}" if str(error) else "")
                + "; try a smaller batch, input size or model"), EXIT_FAILURE
    if isinstance(error, RecursionError):
        return "input nested too deeply to read (a hostile or corrupt file?)", EXIT_FAILURE
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0]), EXIT_FAILURE
    if isinstance(error, (ValueError, LookupError, ArithmeticError, RuntimeError, OSError)):
        return str(error) or type(error).__name__, EXIT_FAILURE
    if type(error).__name__ == "DecompressionBombError":  # Pillow's
        return str(error), EXIT_FAILURE
    return (f"internal error ({type(error).__name__}: {error}); rerun with --debug for the "
            f"traceback and please report it"), EXIT_FAILURE


def _os_message(code: int, filename, detail) -> str:
    advice = _OS_ADVICE.get(code, detail or errno.errorcode.get(code, f"errno {code}"))
    return f"{filename}: {advice}" if filename else advice


def _os_error_code(error: BaseException) -> int | None:
    """The errno inside an exception that only says ``(os error N)`` in its text."""
    if type(error).__name__ != "SafetensorError":
        return None
    match = re.search(r"os error (\d+)", str(error))
    return int(match.group(1)) if match else None

"""Run a Markdown guide's ```python blocks in order, in one namespace, and check what each prints
against the ```text block right after it (a block with no such neighbour may print anything)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


def blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(line number, code, expected output or None) for each python block of ``path``."""
    text = Path(path).read_text(encoding="utf-8")
    fences = list(FENCE.finditer(text))
    found = []
    for fence, following in zip(fences, [*fences[1:], None]):
        if fence.group(1) != "python":
            continue
        adjacent = (following is not None and following.group(1) == "text"
                    and not text[fence.end():following.start()].strip())
        line = text.count("\n", 0, fence.start()) + 1
        found.append((line, fence.group(2), following.group(2) if adjacent else None))
    return found


def run(path) -> dict:
    """Execute every python block of ``path``; AssertionError naming the block whose printed
    output differs from its text block. Returns the namespace the blocks shared."""
    namespace: dict = {"__name__": "__guide__"}
    for line, code, expected in blocks(path):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{path}:{line}", "exec"), namespace)  # noqa: S102 -- our own docs
        if expected is not None and printed.getvalue() != expected:
            raise AssertionError(f"{path}: the python block at line {line} printed\n"
                                 f"{printed.getvalue()}\ninstead of\n{expected}")
    return namespace

"""Which implementation the kernels run: the fast ones, or the readable references.

Inside ``with npmobilenet.use_reference_kernels():`` every kernel entry point (depthwise forward
with its epilogue, grad-input and grad-weight; im2col and col2im; batch-norm statistics,
normalise + activate and backward; the bias + activation epilogue of the inference plan) runs
its twin from :mod:`.reference`, so a whole training step or inference pass, of any model, is
plain NumPy a debugger can step through. Each entry point checks :data:`REFERENCE` first, the
one cost when off. The switch is process-wide, like ``no_grad``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["REFERENCE", "use_reference_kernels"]

REFERENCE = False


@contextlib.contextmanager
def use_reference_kernels() -> Iterator[None]:
    """Run every kernel's readable reference instead of the fast kernel inside the block."""
    global REFERENCE
    previous, REFERENCE = REFERENCE, True
    try:
        yield
    finally:
        REFERENCE = previous

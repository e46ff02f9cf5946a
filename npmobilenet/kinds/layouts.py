"""How frameworks store the tensors our kinds hold (ours: HWIO convolutions, ``(kh, kw, C, 1)``
depthwise, ``(in, out)`` linear)."""

from __future__ import annotations

import numpy as np

from .registry import SourceLayout


def permute(axes: tuple[int, ...]) -> SourceLayout:
    """A transpose: source axis ``axes[i]`` becomes our axis ``i``."""
    inverse = tuple(int(i) for i in np.argsort(axes))
    return SourceLayout(lambda a: np.transpose(a, axes),
                        lambda ours: (tuple(ours[i] for i in inverse),))


SAME = SourceLayout(lambda a: a, lambda ours: (ours,))
TORCH_CONV = permute((2, 3, 1, 0))  # (O, I, kh, kw) -> (kh, kw, I, O)
TORCH_DEPTHWISE = permute((2, 3, 0, 1))  # (C, 1, kh, kw) -> (kh, kw, C, 1)
# torch's Linear (out, in), or a 1x1 Conv2d (out, in, 1, 1) used as one (SE layers, timm's head)
TORCH_LINEAR = SourceLayout(lambda a: a.reshape(a.shape[:2]).T,
                            lambda ours: ((ours[1], ours[0]), (ours[1], ours[0], 1, 1)))
# Keras' Dense (in, out), or a 1x1 Conv2D (1, 1, in, out) used as one
KERAS_LINEAR = SourceLayout(lambda a: a.reshape(a.shape[-2:]),
                            lambda ours: ((1, 1, *ours), ours))

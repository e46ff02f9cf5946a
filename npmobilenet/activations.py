"""The activations a node may name, in one table.

Each entry gives the function (a composite of :mod:`npmobilenet.functional` ops, so its gradient
comes from primitives) and, for the clamp-type ones, ``clip_max``: the upper bound of
``min(max(x, 0), clip_max)``, which the batch-norm and depthwise kernels apply in their
epilogues instead of a separate pass; ``numpy`` is the same function applied in place, for the
inference plan. ``hard_sigmoid`` is ``relu6(x + 3) * (1/6)`` as Keras writes it (torch divides
by 6, which can differ in the last bit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import functional as F
from .autograd import Tensor

__all__ = ["ACTIVATIONS", "Activation", "activation"]


@dataclass(frozen=True)
class Activation:
    name: str
    apply: Callable[[Tensor], Tensor]
    clip_max: float | None = None  # set for min(max(x, 0), clip_max): fused into epilogues
    numpy: Callable[[np.ndarray], np.ndarray] | None = None  # in place, for the inference plan

    @property
    def fusable(self) -> bool:
        return self.clip_max is not None


def _hard_swish_inplace(x: np.ndarray) -> np.ndarray:
    gate = np.add(x, x.dtype.type(3))
    np.clip(gate, 0, 6, out=gate)
    gate *= x.dtype.type(1 / 6)
    return np.multiply(x, gate, out=x)


def _hard_sigmoid_inplace(x: np.ndarray) -> np.ndarray:
    x += x.dtype.type(3)
    np.clip(x, 0, 6, out=x)
    x *= x.dtype.type(1 / 6)
    return x


ACTIVATIONS = {a.name: a for a in (
    Activation("identity", lambda x: x, numpy=lambda x: x),
    Activation("relu", F.relu, clip_max=math.inf),
    Activation("relu6", F.relu6, clip_max=6.0),
    Activation("hard_sigmoid", F.hard_sigmoid, numpy=_hard_sigmoid_inplace),
    Activation("hard_swish", F.hard_swish, numpy=_hard_swish_inplace),
)}


def activation(name: str | None) -> Activation:
    """The table entry for ``name`` (None means identity); ValueError naming the choices."""
    key = "identity" if name is None else name
    if key not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[key]

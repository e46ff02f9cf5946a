"""The activations a node may name, in one table.

Each entry gives the function (a composite of :mod:`npmobilenet.functional` ops, so its gradient
comes from primitives); for the clamp-type ones, ``clip_max``: the upper bound of
``min(max(x, 0), clip_max)``, which the training batch-norm kernels apply in their pass; and
``epilogue``: the same function as the inference kernels apply it after a bias (see
:mod:`npmobilenet.kernels.epilogue`). ``hard_sigmoid`` is ``relu6(x + 3) * (1/6)`` as Keras
writes it (torch divides by 6, which can differ in the last bit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


from . import functional as F
from .autograd import Tensor
from .kernels import epilogue

__all__ = ["ACTIVATIONS", "Activation", "activation"]


@dataclass(frozen=True)
class Activation:
    name: str
    apply: Callable[[Tensor], Tensor]
    epilogue_code: int = epilogue.IDENTITY
    clip_max: float | None = None  # set for min(max(x, 0), clip_max): fused into batch norm

    @property
    def fusable(self) -> bool:
        """Whether the training batch-norm kernels apply it in their pass."""
        return self.clip_max is not None

    @property
    def epilogue(self) -> tuple[int, float]:
        """(code, clip_max): what an inference kernel's epilogue applies."""
        return self.epilogue_code, 0.0 if self.clip_max is None else self.clip_max


ACTIVATIONS = {a.name: a for a in (
    Activation("identity", lambda x: x),
    Activation("relu", F.relu, epilogue.CLAMP, clip_max=math.inf),
    Activation("relu6", F.relu6, epilogue.CLAMP, clip_max=6.0),
    Activation("hard_sigmoid", F.hard_sigmoid, epilogue.HSIGMOID),
    Activation("hard_swish", F.hard_swish, epilogue.HSWISH),
)}


def activation(name: str | None) -> Activation:
    """The table entry for ``name`` (None means identity); ValueError naming the choices."""
    key = "identity" if name is None else name
    if key not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[key]

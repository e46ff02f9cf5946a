"""The one table of primitive ops: name -> forward + vector-Jacobian product.

``forward(*arrays, **attrs) -> (out, saved)`` computes the result from ndarrays and returns what
the vjp needs. ``vjp(grad_out, saved, needs) -> tuple`` returns one gradient per input (``None``
where ``needs`` is False, so frozen inputs cost nothing). ``apply`` validates the inputs, runs
the forward and records the node when a gradient will be wanted (and, while a trace is active,
reports the op to it: see :mod:`npmobilenet.tracing`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import tracing
from ..autograd import Node, Tensor, as_float_array, is_grad_enabled


@dataclass(frozen=True)
class Op:
    name: str
    input_names: tuple[str, ...]
    forward: Callable
    vjp: Callable | None


REGISTRY: dict[str, Op] = {}


def register(name: str, input_names: tuple[str, ...], vjp: Callable | None = None):
    """Decorator registering ``forward`` under ``name``; ``vjp`` may be given here or via ``.defvjp``."""
    def decorate(forward: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"op '{name}' is already registered")
        REGISTRY[name] = Op(name, tuple(input_names), forward, vjp)
        return forward
    return decorate


def defvjp(name: str):
    """Decorator attaching the vector-Jacobian product of an already registered op."""
    def decorate(vjp: Callable) -> Callable:
        op = REGISTRY[name]
        REGISTRY[name] = Op(op.name, op.input_names, op.forward, vjp)
        return vjp
    return decorate


def _missing_vjp(op: Op):
    def vjp(*_):
        raise NotImplementedError(f"op '{op.name}' has no registered vector-Jacobian product")
    return vjp


def apply(name: str, *inputs, **attrs) -> Tensor:
    """Run op ``name`` on Tensors/ndarrays; all float inputs must share one dtype."""
    try:
        op = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown op '{name}'; registered: {sorted(REGISTRY)}") from None
    if len(inputs) != len(op.input_names):
        raise ValueError(f"{name}: expected inputs {op.input_names}, got {len(inputs)} values")
    tensors = tuple(x if isinstance(x, Tensor) else Tensor(as_float_array(x, f"{name}: {arg}"))
                    for x, arg in zip(inputs, op.input_names))
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        described = ", ".join(f"{arg}={t.dtype}" for arg, t in zip(op.input_names, tensors))
        raise ValueError(f"{name}: inputs mix float dtypes ({described}); cast them to one dtype")
    tracer = tracing.ACTIVE
    if tracer is None:
        out, saved = op.forward(*(t.data for t in tensors), **attrs)
    else:
        started = time.perf_counter()
        out, saved = op.forward(*(t.data for t in tensors), **attrs)
        seconds = time.perf_counter() - started
    result = Tensor(out)
    if is_grad_enabled() and any(t.requires_grad for t in tensors):
        result.requires_grad = True
        result.node = Node(op if op.vjp is not None else Op(op.name, op.input_names, op.forward,
                                                           _missing_vjp(op)), tensors, saved)
    if tracer is not None:
        tracer.record_forward(name, tensors, result, seconds)
    return result


def scalar_like(value, like: np.ndarray) -> np.ndarray:
    """A Python number as a 0-d array of ``like``'s dtype (so scalars never promote)."""
    return np.asarray(value, dtype=like.dtype)

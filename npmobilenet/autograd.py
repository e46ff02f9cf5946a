"""Tensor and reverse-mode differentiation.

A Tensor wraps an ndarray. When an op runs with grad enabled and some input requires grad, the
result keeps a ``Node``: which op, which input tensors, and what the op saved for its
vector-Jacobian product. ``backward`` walks those nodes in reverse topological order,
accumulating gradients, undoing broadcasting in one place and checking every gradient's shape
and dtype against its input.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Run ops without recording them (inference, optimizer updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def as_float_array(data, name: str = "data") -> np.ndarray:
    """Return ``data`` as a float32/float64 ndarray; Python numbers and lists become float32."""
    if isinstance(data, np.ndarray):
        if data.dtype in FLOAT_DTYPES:
            return data
        raise ValueError(f"{name}: expected a float32 or float64 array, got dtype {data.dtype}; "
                         f"convert it with .astype(np.float32)")
    if isinstance(data, np.generic):
        return as_float_array(np.asarray(data), name)
    array = np.asarray(data)
    if array.dtype.kind not in "iuf" or array.dtype == np.bool_:
        raise ValueError(f"{name}: expected numbers, got {array.dtype} data")
    return array.astype(np.float32)


@dataclass(eq=False)
class Node:
    """One recorded application of a registered op."""

    op: Any  # ops.registry.Op
    inputs: tuple["Tensor", ...]
    saved: Any


class Tensor:
    """An ndarray that can record the ops applied to it and receive gradients.

    Parameters
    ----------
    data : array_like
        float32 by default (Python numbers, lists); float32/float64 arrays keep their dtype.
    requires_grad : bool
        Whether ``backward`` should fill ``.grad`` for this tensor.
    """

    __slots__ = ("data", "grad", "requires_grad", "node")
    __array_priority__ = 100  # ndarray <op> Tensor defers to Tensor's reflected operators

    def __init__(self, data, requires_grad: bool = False):
        self.data = as_float_array(data.data if isinstance(data, Tensor) else data)
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self.node: Node | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{grad})"

    def __len__(self) -> int:
        return len(self.data)

    # Operators delegate to the functional ops (imported lazily: functional imports this module).
    def __add__(self, other):
        from . import functional
        return functional.add(self, other)

    __radd__ = __add__

    def __mul__(self, other):
        from . import functional
        return functional.mul(self, other)

    __rmul__ = __mul__

    def __matmul__(self, other):
        from . import functional
        return functional.matmul(self, other)

    def reshape(self, *shape):
        from . import functional
        return functional.reshape(self, shape[0] if len(shape) == 1 else shape)

    def sum(self, axis=None, keepdims=False):
        from . import functional
        return functional.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        from . import functional
        return functional.mean(self, axis=axis, keepdims=keepdims)

    def detach(self) -> "Tensor":
        return Tensor(self.data)

    def backward(self, grad=None) -> None:
        """Accumulate d(self)/d(leaf) into ``.grad`` of every leaf that requires grad.

        ``grad`` is the upstream gradient; it defaults to 1 for a single-element tensor.
        The recorded graph is released afterwards.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input of the ops "
                               "that produced it requires grad, or it was computed under no_grad)")
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f"backward: grad must be given for a non-scalar tensor of shape "
                                 f"{self.shape}")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad)
            if grad.shape != self.shape or grad.dtype != self.dtype:
                raise ValueError(f"backward: grad must have shape {self.shape} and dtype {self.dtype}, "
                                 f"got {grad.shape} {grad.dtype}")
        _backpropagate(self, grad)


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from ``root`` through recorded nodes, inputs before outputs."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor.node is not None:
            stack.extend((t, False) for t in tensor.node.inputs if t.requires_grad and id(t) not in visited)
    return order


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes that broadcasting added or stretched to reach its shape."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _backpropagate(root: Tensor, grad: np.ndarray) -> None:
    grads = {id(root): grad}
    for tensor in reversed(_topological_order(root)):
        g = grads.pop(id(tensor), None)
        if g is None:
            continue
        node = tensor.node
        if node is None:
            # A copy: vjps may hand the same array to several inputs, and optimizers edit grads.
            tensor.grad = g.copy() if tensor.grad is None else tensor.grad + g
            continue
        if node.saved is _RELEASED:
            raise RuntimeError(f"backward: the graph through op '{node.op.name}' was already used by "
                               f"an earlier backward call")
        needs = tuple(t.requires_grad for t in node.inputs)
        input_grads = node.op.vjp(g, node.saved, needs)
        node.saved = _RELEASED
        for index, (t, need, gi) in enumerate(zip(node.inputs, needs, input_grads)):
            if not need:
                continue
            if gi is None:
                raise RuntimeError(f"op '{node.op.name}' returned no gradient for its input "
                                   f"'{node.op.input_names[index]}'")
            gi = unbroadcast(gi, t.shape)
            if gi.shape != t.shape or gi.dtype != t.dtype:
                raise RuntimeError(
                    f"op '{node.op.name}': gradient for '{node.op.input_names[index]}' has shape "
                    f"{gi.shape} dtype {gi.dtype}, expected {t.shape} {t.dtype}")
            previous = grads.get(id(t))
            grads[id(t)] = gi if previous is None else previous + gi


_RELEASED = object()

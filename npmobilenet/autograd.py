"""Tensor and reverse-mode differentiation.

A Tensor wraps an ndarray. When an op runs with grad enabled and some input requires grad, the
result keeps a ``Node``: which op, which input tensors, and what the op saved for its
vector-Jacobian product. ``backward`` walks those nodes in reverse topological order,
accumulating gradients, undoing broadcasting in one place and checking every gradient's shape
and dtype against its input. Gradient hooks (``register_hook``) and ``retain_grad`` let a reader
see or change the gradient reaching any tensor; an active :func:`npmobilenet.trace` sees every
vector-Jacobian product run.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import tracing

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

    # _hooks: gradient hooks (None until register_hook or retain_grad); _retains_grad: set by
    # retain_grad; trace_link: (trace, record id) of the traced op that produced this tensor.
    __slots__ = ("data", "grad", "requires_grad", "node", "_hooks", "_retains_grad", "trace_link")
    __array_priority__ = 100  # ndarray <op> Tensor defers to Tensor's reflected operators

    def __init__(self, data, requires_grad: bool = False):
        self.data = as_float_array(data.data if isinstance(data, Tensor) else data)
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self.node: Node | None = None
        self._hooks: list | None = None
        self.trace_link = None

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

    def __sub__(self, other):
        from . import functional
        return functional.sub(self, other)

    def __rsub__(self, other):
        from . import functional
        return functional.sub(other, self)

    def __truediv__(self, other):
        from . import functional
        return functional.div(self, other)

    def __rtruediv__(self, other):
        from . import functional
        return functional.div(other, self)

    def __pow__(self, other):
        from . import functional
        return functional.pow(self, other)

    def __rpow__(self, other):
        from . import functional
        return functional.pow(other, self)

    def __neg__(self):
        from . import functional
        return functional.neg(self)

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

    def retain_grad(self) -> None:
        """Keep this tensor's gradient in ``.grad`` after ``backward``, as leaves do.

        For an intermediate result (an activation, a logit), whose gradient is otherwise passed
        on and dropped. It is the gradient after any hooks, accumulated like a leaf's.
        """
        self._require_grad("retain_grad")
        if self._hooks is None:
            self._hooks = []
        self._retains_grad = True

    def register_hook(self, hook: Callable[[np.ndarray], np.ndarray | None]) -> "HookHandle":
        """Call ``hook(grad)`` whenever ``backward`` computes the gradient reaching this tensor.

        ``grad`` is a read-only ndarray of this tensor's shape and dtype (the engine may share
        it between tensors); returning an array of that shape and dtype replaces it for the
        rest of the pass, returning None keeps it. Hooks run in the order they were added, before
        a leaf accumulates ``.grad``. Returns a handle whose ``remove()`` unregisters the hook.
        """
        self._require_grad("register_hook")
        if not callable(hook):
            raise TypeError(f"register_hook: expected a callable, got {type(hook).__name__}")
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)
        return HookHandle(self._hooks, hook)

    def _require_grad(self, what: str) -> None:
        if not self.requires_grad:
            raise RuntimeError(f"{what}: this tensor does not require grad, so no gradient will "
                               f"reach it")

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


class HookHandle:
    """Returned by :meth:`Tensor.register_hook`; ``remove()`` unregisters the hook."""

    def __init__(self, hooks: list, hook: Callable):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def _run_hooks(tensor: Tensor, grad: np.ndarray) -> np.ndarray:
    """The gradient reaching ``tensor`` after its hooks; kept in ``.grad`` if it retains it."""
    for hook in list(tensor._hooks):
        shown = grad.view()
        shown.flags.writeable = False
        replaced = hook(shown)
        if replaced is not None:
            replaced = np.asarray(replaced)
            if replaced.shape != tensor.shape or replaced.dtype != tensor.dtype:
                raise RuntimeError(f"gradient hook {getattr(hook, '__name__', hook)!r} returned shape "
                                   f"{replaced.shape} dtype {replaced.dtype}, expected "
                                   f"{tensor.shape} {tensor.dtype}")
            grad = replaced
    if tensor.node is not None and getattr(tensor, "_retains_grad", False):
        tensor.grad = grad.copy() if tensor.grad is None else tensor.grad + grad
    return grad


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
    tracer = tracing.ACTIVE
    grads = {id(root): grad}
    # Outputs before inputs; each tensor is let go once its op's vjp has run, and each op its
    # inputs, so an activation nothing else holds is freed as soon as the last vjp reading it
    # has run: the peak of a backward pass is the forward's saved arrays, not twice them.
    pending = _topological_order(root)
    while pending:
        tensor = pending.pop()
        g = grads.pop(id(tensor), None)
        if g is None:
            continue
        if tensor._hooks is not None:
            g = _run_hooks(tensor, g)
        node = tensor.node
        if node is None:
            # A copy: vjps may hand the same array to several inputs, and optimizers edit grads.
            tensor.grad = g.copy() if tensor.grad is None else tensor.grad + g
            continue
        if node.saved is _RELEASED:
            raise RuntimeError(f"backward: the graph through op '{node.op.name}' was already used by "
                               f"an earlier backward call")
        needs = tuple(t.requires_grad for t in node.inputs)
        if tracer is None:
            input_grads = node.op.vjp(g, node.saved, needs)
        else:
            started = time.perf_counter()
            input_grads = node.op.vjp(g, node.saved, needs)
            tracer.record_backward(node.op.name, tensor, node.inputs, input_grads,
                                   time.perf_counter() - started)
        node.saved = _RELEASED
        inputs, node.inputs = node.inputs, ()
        for index, (t, need, gi) in enumerate(zip(inputs, needs, input_grads)):
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

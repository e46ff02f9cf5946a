"""The tape: accumulation over shared inputs, broadcasting undone, no_grad, dtype rules."""

import numpy as np
import pytest

from npmobilenet import Tensor, no_grad
from npmobilenet import functional as F
from npmobilenet.ops import REGISTRY
from npmobilenet.ops.registry import Op, apply


def test_gradient_accumulates_over_every_use():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = F.add(F.mul(x, x), x)  # d/dx (x^2 + x) = 2x + 1
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 5.0, 7.0])


def test_broadcast_gradient_is_reduced_to_the_input_shape():
    x = Tensor(np.ones((2, 3, 4), np.float32), requires_grad=True)
    b = Tensor(np.ones((4,), np.float32), requires_grad=True)
    F.add(x, b).sum().backward()
    assert b.grad.shape == (4,) and b.grad.dtype == np.float32
    np.testing.assert_array_equal(b.grad, np.full(4, 6.0))


def test_default_dtype_is_float32_and_float64_is_kept():
    assert Tensor([1, 2]).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float64
    with pytest.raises(ValueError, match="got dtype int64"):
        Tensor(np.arange(3))


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    with no_grad():
        y = F.relu(x)
    assert not y.requires_grad and y.node is None


def test_backward_needs_grad_for_non_scalars():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match=r"grad must be given for a non-scalar tensor of shape \(3,\)"):
        F.relu(x).backward()


def test_frozen_inputs_get_no_gradient_computed():
    x = Tensor(np.ones((1, 4, 4, 2), np.float32), requires_grad=True)
    w = Tensor(np.ones((1, 1, 2, 3), np.float32), requires_grad=False)
    F.conv2d(x, w).sum().backward()
    assert w.grad is None and x.grad.shape == x.shape


def test_an_op_without_vjp_is_an_error_naming_it():
    REGISTRY["forward_only"] = Op("forward_only", ("x",), lambda x: (x * 2, None), None)
    try:
        y = apply("forward_only", Tensor(np.ones(2), requires_grad=True))
        with pytest.raises(NotImplementedError, match="op 'forward_only' has no registered"):
            y.sum().backward()
    finally:
        del REGISTRY["forward_only"]


def test_a_wrong_gradient_shape_is_caught():
    REGISTRY["bad_vjp"] = Op("bad_vjp", ("x",), lambda x: (x.copy(), None), lambda g, s, n: (g[:1],))
    try:
        y = apply("bad_vjp", Tensor(np.ones((2, 3)), requires_grad=True))
        with pytest.raises(RuntimeError, match=r"op 'bad_vjp': gradient for 'x' has shape \(1, 3\)"):
            y.sum().backward()
    finally:
        del REGISTRY["bad_vjp"]


def test_backward_frees_each_activation_after_its_last_vjp():
    """An activation nobody else holds is gone before backward reaches the graph's input."""
    import weakref

    x = Tensor(np.linspace(-1.0, 1.0, 12).reshape(3, 4), requires_grad=True)

    def loss_and_activation_refs():
        hidden = F.relu(F.mul(x, 2.0))
        return F.sum(F.mul(hidden, 3.0)), weakref.ref(hidden.data)

    loss, hidden_data = loss_and_activation_refs()
    alive_when_input_reached = []
    x.register_hook(lambda g: alive_when_input_reached.append(hidden_data() is not None))
    assert hidden_data() is not None  # the recorded graph holds it until backward
    loss.backward()
    assert alive_when_input_reached == [False]
    np.testing.assert_array_equal(x.grad, np.where(x.data > 0, 6.0, 0.0))

"""Tensor operators (-, /, **, unary -, reflected forms), retain_grad and gradient hooks.

The ops themselves (sub, div, pow, neg) are checked against finite differences and torch by the
registry-walking tests in tests/ops; here: the operators reach them with the right operands,
keep float32, and hooks see and replace the gradient as documented.
"""

import numpy as np
import pytest

from npmobilenet import Tensor
from npmobilenet import functional as F


def _leaf(values, dtype=np.float32):
    return Tensor(np.array(values, dtype=dtype), requires_grad=True)


def test_operators_and_reflected_forms_keep_float32():
    a = _leaf([1.0, 2.0, 4.0])
    cases = {
        "a - 1": (a - 1, [0.0, 1.0, 3.0]), "1 - a": (1 - a, [0.0, -1.0, -3.0]),
        "a / 2": (a / 2, [0.5, 1.0, 2.0]), "2 / a": (2 / a, [2.0, 1.0, 0.5]),
        "a ** 2": (a ** 2, [1.0, 4.0, 16.0]), "2 ** a": (2 ** a, [2.0, 4.0, 16.0]),
        "-a": (-a, [-1.0, -2.0, -4.0]), "a - a": (a - a, [0.0, 0.0, 0.0]),
        "ndarray - a": (np.ones(3, np.float32) - a, [0.0, -1.0, -3.0]),
        "ndarray / a": (np.ones(3, np.float32) / a, [1.0, 0.5, 0.25]),
    }
    for text, (result, expected) in cases.items():
        assert isinstance(result, Tensor) and result.dtype == np.float32, text
        np.testing.assert_allclose(result.data, expected, rtol=1e-6, err_msg=text)


def test_operator_gradients():
    a, b = _leaf([1.0, 2.0, 4.0], np.float64), _leaf([0.5, -1.0, 3.0], np.float64)
    ((a - b) * (a / b) + a ** b + 3 ** b - (-a)).sum().backward()
    expected_a = (a.data / b.data) + (a.data - b.data) / b.data + b.data * a.data ** (b.data - 1) + 1
    expected_b = (-(a.data / b.data) - (a.data - b.data) * a.data / b.data ** 2
                  + a.data ** b.data * np.log(a.data) + 3 ** b.data * np.log(3))
    np.testing.assert_allclose(a.grad, expected_a, rtol=1e-12)
    np.testing.assert_allclose(b.grad, expected_b, rtol=1e-12)
    assert a.grad.dtype == b.grad.dtype == np.float64


def test_a_constant_exponent_takes_no_logarithm():
    x = _leaf([-2.0, 0.0, 3.0])
    with np.errstate(all="raise"):  # log of a negative base would warn
        (x ** 2).sum().backward()
    np.testing.assert_array_equal(x.grad, [-4.0, 0.0, 6.0])
    assert x.grad.dtype == np.float32


def test_broadcast_operands_get_gradients_of_their_shape():
    x, b = _leaf(np.ones((2, 3))), _leaf([1.0, 2.0, 4.0])
    (x / b - b).sum().backward()
    assert b.grad.shape == (3,) and b.grad.dtype == np.float32
    np.testing.assert_allclose(b.grad, -2 / np.array([1.0, 2.0, 4.0]) ** 2 - 2, rtol=1e-6)


def test_retain_grad_keeps_an_intermediate_gradient():
    x = _leaf([1.0, 2.0, 3.0])
    h = x * 3
    h.retain_grad()
    y = F.relu(h - 4)
    y.retain_grad()
    (y * y).sum().backward()
    np.testing.assert_array_equal(y.grad, [0.0, 4.0, 10.0])  # d/dy sum y^2 = 2y
    np.testing.assert_array_equal(h.grad, [0.0, 4.0, 10.0])  # relu passes it where h > 4
    np.testing.assert_array_equal(x.grad, [0.0, 12.0, 30.0])
    assert h.grad.dtype == np.float32
    z = x * 2  # without retain_grad an intermediate keeps no gradient
    z.sum().backward()
    assert z.grad is None


def test_hooks_see_replace_and_can_be_removed():
    x = _leaf([1.0, 2.0])
    h = x * 3
    seen = []
    h.register_hook(lambda g: seen.append(g.copy()))
    doubling = h.register_hook(lambda g: g * 2)
    h.retain_grad()
    x.register_hook(lambda g: g + 1)  # on a leaf: before .grad accumulates
    h.sum().backward()
    np.testing.assert_array_equal(seen[0], [1.0, 1.0])
    np.testing.assert_array_equal(h.grad, [2.0, 2.0])  # retained after the hooks
    np.testing.assert_array_equal(x.grad, [7.0, 7.0])  # 3 * 2 + 1

    doubling.remove()
    x.grad = None
    h = x * 3
    h.register_hook(lambda g: None)  # None keeps the gradient
    h.sum().backward()
    np.testing.assert_array_equal(x.grad, [4.0, 4.0])


def test_hook_errors():
    x = _leaf([1.0, 2.0])
    h = x * 3
    h.register_hook(lambda g: g.__setitem__(0, 5.0))  # the gradient handed over is read-only
    with pytest.raises(ValueError, match="read-only"):
        h.sum().backward()
    h = x * 3
    h.register_hook(lambda g: g.astype(np.float64))
    with pytest.raises(RuntimeError, match=r"returned shape \(2,\) dtype float64, expected \(2,\) float32"):
        h.sum().backward()
    with pytest.raises(RuntimeError, match="register_hook: this tensor does not require grad"):
        Tensor(np.ones(2, np.float32)).register_hook(lambda g: g)
    with pytest.raises(RuntimeError, match="retain_grad: this tensor does not require grad"):
        Tensor(np.ones(2, np.float32)).retain_grad()
    with pytest.raises(TypeError, match="expected a callable"):
        x.register_hook("not a function")

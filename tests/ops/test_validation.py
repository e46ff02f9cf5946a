"""Bad input raises ValueError naming the argument and the shapes or dtypes."""

import numpy as np
import pytest

from npmobilenet import Tensor
from npmobilenet import functional as F

X = np.zeros((1, 5, 5, 3), np.float32)
W = np.zeros((3, 3, 3, 4), np.float32)
DW = np.zeros((3, 3, 3, 1), np.float32)


@pytest.mark.parametrize("call, message", [
    (lambda: F.conv2d(X[0], W), r"x must be NHWC \(N, H, W, C\), got shape \(5, 5, 3\)"),
    (lambda: F.conv2d(X, W[0]), r"w must be \(kh, kw, Cin, Cout\), got shape \(3, 3, 4\)"),
    (lambda: F.conv2d(X, np.zeros((3, 3, 2, 4), np.float32)), r"x has 3 channels but w .* expects 2"),
    (lambda: F.depthwise_conv2d(X, np.zeros((3, 3, 4, 1), np.float32)), r"depthwise_conv2d: x has 3 channels"),
    (lambda: F.conv2d(X, np.zeros((7, 7, 3, 4), np.float32), padding="VALID"),
     r"height 5 with padding \(0, 0\) is smaller than the kernel span 7"),
    (lambda: F.depthwise_conv2d(X, DW, stride=0), r"stride: expected a positive int"),
    (lambda: F.conv2d(X, W, dilation=-1), r"dilation: expected a positive int"),
    (lambda: F.conv2d(X, W, padding="FULL"), r"padding: expected 'SAME', 'VALID'.*got 'FULL'"),
    (lambda: F.conv2d(X, W, padding=((1, -1), (0, 0))), r"padding: explicit pads must be non-negative"),
    (lambda: F.conv2d(X.astype(np.int32), W), r"conv2d: x: expected a float32 or float64 array, got dtype int32"),
    (lambda: F.relu(np.ones(3, bool)), r"relu: x: expected a float32 or float64 array, got dtype bool"),
    (lambda: F.conv2d(X, W.astype(np.float64)), r"conv2d: inputs mix float dtypes \(x=float32, w=float64\)"),
    (lambda: F.add(Tensor(np.ones(2, np.float32)), np.ones(2)), r"add: inputs mix float dtypes"),
    (lambda: F.matmul(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)), r"inner dimensions differ"),
    (lambda: F.cross_entropy(np.ones((2, 3), np.float32), np.array([0, 3])), r"labels must lie in \[0, 3\)"),
    (lambda: F.cross_entropy(np.ones((2, 3), np.float32), np.array([0.0, 1.0])), r"labels must be integer"),
    (lambda: F.batch_norm(X, np.ones(4, np.float32), np.zeros(3, np.float32)),
     r"gamma must have shape \(3,\) for x \(1, 5, 5, 3\), got \(4,\)"),
    (lambda: F.dropout(X, 1.0), r"rate must be in \[0, 1\), got 1.0"),
])
def test_bad_input_names_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_scalars_take_the_tensor_dtype():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = F.mul(F.add(x, 2.5), 0.5)
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, np.full(3, 0.5, np.float32))

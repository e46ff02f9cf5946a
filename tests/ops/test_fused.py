"""Fused ops equal the ops they fuse, to the last bit, forward and backward."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from npmobilenet import functional as F
from npmobilenet.autograd import Tensor
from npmobilenet.testing.strategies import op_cases


def _run(fused: bool, case, cotangent):
    x, w, gamma, beta = (Tensor(a.copy(), requires_grad=True) for a in case.inputs)
    attrs = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in case.attrs.items()}
    conv = {k: attrs.pop(k) for k in ("stride", "padding", "dilation")}
    if fused:
        out = F.depthwise_batch_norm(x, w, gamma, beta, **conv, **attrs)
    else:
        out = F.batch_norm(F.depthwise_conv2d(x, w, **conv), gamma, beta, **attrs)
    out.backward(cotangent(out.shape))
    return [out.data, x.grad, w.grad, gamma.grad, beta.grad, attrs.get("running_mean"),
            attrs.get("running_var")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@given(data=st.data())
def test_depthwise_batch_norm_is_the_two_ops_bit_for_bit(dtype, data):
    case = data.draw(op_cases("depthwise_batch_norm")).astype(dtype)
    rng_seed = data.draw(st.integers(0, 2**32 - 1))

    def cotangent(shape):
        return np.random.default_rng(rng_seed).standard_normal(shape).astype(dtype)

    fused, separate = _run(True, case, cotangent), _run(False, case, cotangent)
    assert fused[0].dtype == dtype
    for name, a, b in zip(("out", "x", "w", "gamma", "beta", "running_mean", "running_var"),
                          fused, separate):
        if b is None:
            assert a is None, name
        else:
            assert a.dtype == b.dtype == dtype, name
            np.testing.assert_array_equal(a, b, err_msg=name)

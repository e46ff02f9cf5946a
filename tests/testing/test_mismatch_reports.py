"""ReferenceMismatch reports: the worst element's index with the expected and obtained values,
NaN caught, and the float32 hint exactly when it applies."""

import numpy as np
import pytest
from hypothesis import strategies as st

from npmobilenet import Tensor
from npmobilenet import functional as F
from npmobilenet.testing import ReferenceMismatch, check_against_reference
from npmobilenet.testing.strategies import OpCase


def ours(x, w, **attrs):
    return F.depthwise_conv2d(x, w, **attrs).data


def report(user_fn, **options) -> str:
    with pytest.raises(ReferenceMismatch) as caught:
        check_against_reference("depthwise_conv2d", user_fn, max_examples=20, **options)
    return str(caught.value)


def test_the_worst_element_is_named_with_both_values():
    def last_element_off(x, w, **attrs):
        out = ours(x, w, **attrs)
        out.flat[-1] += 0.5
        return out

    # Ones through a 3x3 SAME window of ones: the corner pixel (0, 2, 2, 0) sums 4 of them.
    case = OpCase("depthwise_conv2d", (np.ones((1, 3, 3, 1)), np.ones((3, 3, 1, 1))),
                  {"stride": 1, "padding": "SAME", "dilation": 1})
    text = report(last_element_off, cases=st.just(case))
    assert text.splitlines()[0] == ("depthwise_conv2d: forward output differs: relative error 0.0556 > "
                                    "1e-10; worst element (0, 2, 2, 0) of the NHWC array: expected 4, got 4.5")
    assert "hint" not in text  # an error this large is no rounding


def test_nan_is_a_mismatch():
    def nan_at_the_end(x, w, **attrs):
        out = ours(x, w, **attrs)
        out.flat[-1] = np.nan
        return out

    assert "got nan" in report(nan_at_the_end).splitlines()[0]


def test_a_float32_kernel_gets_the_hint_and_passes_in_float32():
    def in_float32(x, w, **attrs):
        return ours(x.astype(np.float32), w.astype(np.float32), **attrs)

    text = report(in_float32)
    assert ("hint: your kernel returned float32; check a float32 kernel with dtype=np.float32 "
            "(relative tolerance 0.0001)") in text
    check_against_reference("depthwise_conv2d", in_float32, dtype=np.float32, max_examples=20)


def test_a_gradient_report_names_the_weight_layout():
    def vjp_scaled(g, x, w, **attrs):
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        F.depthwise_conv2d(xt, wt, **attrs).backward(g)
        return xt.grad, wt.grad * (1 + 1e-7)  # float32-sized noise in a float64 check

    text = report(ours, user_vjp=vjp_scaled)
    assert text.startswith("depthwise_conv2d: gradient of w differs: relative error ")
    assert "of the HWCM array: expected " in text
    assert "hint: an error this size is float32 rounding" in text

"""npmobilenet.testing catches wrong implementations and passes a right one (torch, NCHW)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from npmobilenet.geometry import pair
from npmobilenet.ops import REGISTRY, apply
from npmobilenet.ops.registry import Op
from npmobilenet.testing import (GradientMismatch, ReferenceMismatch, check_against_reference,
                                 check_grad, resolve_padding)


def torch_depthwise(x, w, stride=1, padding="SAME", dilation=1):
    """torch's grouped convolution as a depthwise convolution: x NCHW, w (C*M, 1, kh, kw)."""
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    top, bottom, left, right = resolve_padding(padding, x.shape[2:], w.shape[2:], stride, dilation)
    xt = TF.pad(torch.from_numpy(x), (left, right, top, bottom))
    return TF.conv2d(xt, torch.from_numpy(w), stride=stride, dilation=dilation, groups=x.shape[1]).numpy()


def torch_depthwise_symmetric(x, w, stride=1, padding="SAME", dilation=1):
    """Wrong: pads SAME symmetrically, as torch's padding="same" habit suggests."""
    if padding == "SAME":
        k = w.shape[2:]
        d = pair(dilation, "dilation")
        padding = (((k[0] - 1) * d[0] // 2,) * 2, ((k[1] - 1) * d[1] // 2,) * 2)
    return torch_depthwise(x, w, stride, padding, dilation)


def torch_depthwise_channel_major(x, w, stride=1, padding="SAME", dilation=1):
    """Wrong: emits output channels in m*C + c order instead of TF's c*M + m."""
    out = torch_depthwise(x, w, stride, padding, dilation)
    n, cm, oh, ow = out.shape
    c = x.shape[1]
    return out.reshape(n, c, cm // c, oh, ow).transpose(0, 2, 1, 3, 4).reshape(n, cm, oh, ow)


def torch_depthwise_vjp(g, x, w, stride=1, padding="SAME", dilation=1, factor=1.0):
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    stride_, dilation_ = pair(stride, "stride"), pair(dilation, "dilation")
    top, bottom, left, right = resolve_padding(padding, x.shape[2:], w.shape[2:], stride_, dilation_)
    out = TF.conv2d(TF.pad(xt, (left, right, top, bottom)), wt, stride=stride_, dilation=dilation_,
                    groups=x.shape[1])
    out.backward(torch.from_numpy(g))
    return xt.grad.numpy(), wt.grad.numpy() * factor


def test_torch_grouped_conv_passes_in_nchw():
    check_against_reference("depthwise_conv2d", torch_depthwise, layout="NCHW", weight_layout="OIHW",
                            user_vjp=torch_depthwise_vjp, max_examples=60)


def test_symmetric_padding_for_same_is_caught():
    with pytest.raises(ReferenceMismatch) as caught:
        check_against_reference("depthwise_conv2d", torch_depthwise_symmetric, layout="NCHW",
                                weight_layout="OIHW")
    report = str(caught.value)
    assert "smallest counterexample: depthwise_conv2d(x (1," in report
    assert "padding='SAME'" in report


def test_transposed_depthwise_channel_order_is_caught():
    with pytest.raises(ReferenceMismatch) as caught:
        check_against_reference("depthwise_conv2d", torch_depthwise_channel_major, layout="NCHW",
                                weight_layout="OIHW")
    report = str(caught.value)
    # The shrunk case is the smallest that can tell the orders apart: two channels, multiplier two.
    assert "forward output differs" in report and "w (1, 1, 2, 2)" in report


def test_gradient_off_by_a_factor_is_caught_by_reference_check():
    wrong_vjp = lambda *args, **attrs: torch_depthwise_vjp(*args, **attrs, factor=1.01)  # noqa: E731
    with pytest.raises(ReferenceMismatch, match="gradient of w differs") as caught:
        check_against_reference("depthwise_conv2d", torch_depthwise, layout="NCHW", weight_layout="OIHW",
                                user_vjp=wrong_vjp)
    assert "smallest counterexample: depthwise_conv2d(x (1, 1, 1, 1), w (1, 1, 1, 1)" in str(caught.value)


def test_gradient_off_by_a_factor_is_caught_by_check_grad():
    REGISTRY["half_square"] = Op("half_square", ("x",), lambda x: (0.5 * x * x, x),
                                 lambda g, x, needs: (2.0 * g * x,))  # should be g * x
    try:
        with pytest.raises(GradientMismatch, match=r"x \(shape \(2, 3\)\): worst element"):
            check_grad(lambda x: apply("half_square", x), np.linspace(0.5, 1.0, 6).reshape(2, 3),
                       names=("x",))
    finally:
        del REGISTRY["half_square"]


def test_check_grad_passes_a_composite_of_ops():
    from npmobilenet import functional as F
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 5, 5, 3)), rng.standard_normal((3, 3, 3, 1))
    check_grad(lambda x, w: F.relu6(F.depthwise_conv2d(F.mul(x, 2.0), w, stride=2)), x, w,
               names=("x", "w"))

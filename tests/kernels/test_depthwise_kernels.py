"""The Numba depthwise kernels against the loop references, and the references against torch."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

from npmobilenet.activations import ACTIVATIONS, activation
from npmobilenet.autograd import Tensor
from npmobilenet.kernels import depthwise as dw
from npmobilenet.kernels import reference as ref

DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-12, np.float32: 1e-5}


@st.composite
def cases(draw):
    """A valid depthwise geometry with random data: N, C, M in 1..3, kernel 1..5 per axis,
    stride and dilation 1..3, pads 0..3 per side; H and W drawn so the dilated kernel fits."""
    n, c, m = (draw(st.integers(1, 3)) for _ in range(3))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    hw = []
    for k, d, before, after in zip(kernel, dilation, pads[0::2], pads[1::2]):
        smallest = max(1, (k - 1) * d + 1 - before - after)
        hw.append(draw(st.integers(smallest, smallest + 6)))
    seed = draw(st.integers(0, 2**32 - 1))
    return n, tuple(hw), c, m, kernel, stride, dilation, pads, seed


def make(case, dtype):
    n, (h, w), c, m, kernel, stride, dilation, pads, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    weight = rng.standard_normal((*kernel, c, m)).astype(dtype)
    oh = (h + pads[0] + pads[1] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + pads[2] + pads[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    g = rng.standard_normal((n, oh, ow, c * m)).astype(dtype)
    return x, weight, g, rng


def assert_close(actual, expected, dtype):
    """Relative to the largest magnitude, since summation order differs between implementations."""
    assert actual.dtype == dtype and actual.shape == expected.shape
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


# Every kernel test runs with the serial kernels and with the prange ones (threshold 0).
THREADING = pytest.mark.parametrize("threshold", [1 << 62, 0], ids=["serial", "parallel"])


@contextmanager
def parallel_threshold(threshold):
    saved, dw.PARALLEL_MIN_MACS = dw.PARALLEL_MIN_MACS, threshold
    try:
        yield
    finally:
        dw.PARALLEL_MIN_MACS = saved


@THREADING
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=cases())
def test_kernels_match_reference(threshold, dtype, case):
    with parallel_threshold(threshold):
        x, w, g, _ = make(case, dtype)
        _, (h, wd), _, _, kernel, stride, dilation, pads, _ = case
        assert_close(dw.depthwise_forward(x, w, stride, dilation, pads),
                     ref.depthwise_forward_reference(x, w, stride, dilation, pads), dtype)
        assert_close(dw.depthwise_grad_input(g, w, (h, wd), stride, dilation, pads),
                     ref.depthwise_grad_input_reference(g, w, (h, wd), stride, dilation, pads), dtype)
        assert_close(dw.depthwise_grad_weight(x, g, kernel, stride, dilation, pads),
                     ref.depthwise_grad_weight_reference(x, g, kernel, stride, dilation, pads), dtype)


@THREADING
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=cases(), name=st.sampled_from(sorted(ACTIVATIONS)))
def test_fused_epilogue_is_bias_then_the_activation(threshold, dtype, case, name):
    with parallel_threshold(threshold):
        x, w, _, rng = make(case, dtype)
        _, _, c, m, _, stride, dilation, pads, _ = case
        bias = rng.standard_normal(c * m).astype(dtype)
        act = activation(name)
        expected = act.apply(Tensor(ref.depthwise_forward_reference(x, w, stride, dilation, pads) + bias)).data
        out = np.empty(expected.shape, dtype)
        result = dw.depthwise_forward(x, w, stride, dilation, pads, bias=bias, epilogue=act.epilogue, out=out)
        assert result is out and result.dtype == dtype
        assert_close(result, expected, dtype)


@THREADING
def test_mobilenet_shape_fast_path_matches_reference(threshold):
    """A 3x3 layer large enough that most pixels take the nine-tap interior path, stride 1 and 2."""
    with parallel_threshold(threshold):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 12, 11, 40)).astype(np.float32)
        w = rng.standard_normal((3, 3, 40, 1)).astype(np.float32)
        for stride, pads in [((1, 1), (1, 1, 1, 1)), ((2, 2), (0, 1, 1, 1))]:
            out = dw.depthwise_forward(x, w, stride, (1, 1), pads)
            assert_close(out, ref.depthwise_forward_reference(x, w, stride, (1, 1), pads), np.float32)
            g = rng.standard_normal(out.shape).astype(np.float32)
            assert_close(dw.depthwise_grad_input(g, w, (12, 11), stride, (1, 1), pads),
                         ref.depthwise_grad_input_reference(g, w, (12, 11), stride, (1, 1), pads), np.float32)
            assert_close(dw.depthwise_grad_weight(x, g, (3, 3), stride, (1, 1), pads),
                         ref.depthwise_grad_weight_reference(x, g, (3, 3), stride, (1, 1), pads), np.float32)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 6, 5, 4)).transpose(0, 2, 1, 3)  # (1, 5, 6, 4), not C-contiguous
    w = rng.standard_normal((3, 3, 4, 1))
    expected = ref.depthwise_forward_reference(x, w, (1, 1), (1, 1), (1, 1, 1, 1))
    assert_close(dw.depthwise_forward(x, w, (1, 1), (1, 1), (1, 1, 1, 1)), expected, np.float64)


@given(case=cases())
def test_reference_matches_torch_grouped_conv(case):
    """The references against torch's grouped convolution (groups=C) and its autograd, float64."""
    x, w, g, _ = make(case, np.float64)
    _, (h, wd), c, m, kernel, stride, dilation, pads, _ = case
    top, bottom, left, right = pads
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    wt = torch.from_numpy(w.transpose(2, 3, 0, 1).reshape(c * m, 1, *kernel).copy()).requires_grad_()
    out = TF.conv2d(TF.pad(xt, (left, right, top, bottom)), wt, stride=stride, dilation=dilation, groups=c)
    out.backward(torch.from_numpy(g.transpose(0, 3, 1, 2).copy()))
    torch_gw = wt.grad.numpy().reshape(c, m, *kernel).transpose(2, 3, 0, 1)
    assert_close(ref.depthwise_forward_reference(x, w, stride, dilation, pads),
                 out.detach().numpy().transpose(0, 2, 3, 1), np.float64)
    assert_close(ref.depthwise_grad_input_reference(g, w, (h, wd), stride, dilation, pads),
                 xt.grad.numpy().transpose(0, 2, 3, 1), np.float64)
    assert_close(ref.depthwise_grad_weight_reference(x, g, kernel, stride, dilation, pads), torch_gw,
                 np.float64)

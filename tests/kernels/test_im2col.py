"""im2col / col2im against a padded-copy reference over strides, dilations and paddings."""

import itertools

import numpy as np
import pytest

from npmobilenet.geometry import conv_output_hw, resolve_padding
from npmobilenet.kernels.im2col import col2im, im2col

GEOMETRIES = [g for g in itertools.product(
    [(1, 1), (5, 7), (8, 6)], [(1, 1), (3, 3), (2, 3), (5, 5)], [1, 2, 3], [1, 2],
    ["SAME", "VALID", 1, ((0, 3), (2, 1))])]


def _reference_columns(x, kernel, stride, dilation, pads, out_hw):
    top, bottom, left, right = pads
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, c = x.shape[0], x.shape[3]
    columns = np.zeros((n, *out_hw, *kernel, c), x.dtype)
    for oh, ow, i, j in itertools.product(range(out_hw[0]), range(out_hw[1]), range(kernel[0]), range(kernel[1])):
        columns[:, oh, ow, i, j] = padded[:, oh * stride + i * dilation, ow * stride + j * dilation]
    return columns


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_and_its_adjoint(dtype):
    rng = np.random.default_rng(0)
    checked = 0
    for hw, kernel, stride, dilation, padding in GEOMETRIES:
        try:
            pads = resolve_padding(padding, hw, kernel, (stride,) * 2, (dilation,) * 2)
            out_hw = conv_output_hw(hw, kernel, (stride,) * 2, (dilation,) * 2, pads)
        except ValueError:
            continue  # the kernel does not fit
        x = rng.standard_normal((2, *hw, 3)).astype(dtype)
        expected = _reference_columns(x, kernel, stride, dilation, pads, out_hw)
        columns = im2col(x, kernel, (stride,) * 2, (dilation,) * 2, pads, out_hw)
        assert columns.dtype == dtype
        np.testing.assert_array_equal(columns, expected)
        # A reused buffer full of garbage is overwritten everywhere, padding included.
        buffer = np.full_like(columns, np.nan)
        assert im2col(x, kernel, (stride,) * 2, (dilation,) * 2, pads, out_hw, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, expected)
        # Adjoint: <im2col(x), cols> == <x, col2im(cols)>.
        cols = rng.standard_normal(columns.shape).astype(dtype)
        gx = col2im(cols, hw, kernel, (stride,) * 2, (dilation,) * 2, pads)
        assert gx.dtype == dtype and gx.shape == x.shape
        lhs, rhs = np.vdot(columns, cols), np.vdot(x, gx)
        assert abs(lhs - rhs) <= (1e-4 if dtype == np.float32 else 1e-10) * max(1.0, abs(lhs))
        checked += 1
    assert checked > 100

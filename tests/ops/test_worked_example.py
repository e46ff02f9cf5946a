"""The worked depthwise-separable example (tests/data/seed002_separable_example.json, values
re-checked with TensorFlow) reproduced exactly by conv2d, depthwise_conv2d and separable_conv2d."""

import json
from pathlib import Path

import numpy as np
import pytest

from npmobilenet import functional as F

EXAMPLE = json.loads((Path(__file__).parents[1] / "data" / "seed002_separable_example.json").read_text())


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def arrays(request):
    dtype = request.param
    return {k: np.array(EXAMPLE[k], dtype=dtype) for k in ("input", "filter", "pointwise_filter")}


def test_conv2d(arrays):
    out = F.conv2d(arrays["input"], arrays["filter"], padding="VALID")
    assert out.dtype == arrays["input"].dtype
    np.testing.assert_array_equal(out.data, EXAMPLE["conv2d_valid"])


def test_depthwise_conv2d(arrays):
    out = F.depthwise_conv2d(arrays["input"], arrays["filter"], padding="VALID")
    assert out.dtype == arrays["input"].dtype
    np.testing.assert_array_equal(out.data, EXAMPLE["depthwise_conv2d_valid"])


def test_separable_conv2d(arrays):
    out = F.separable_conv2d(arrays["input"], arrays["filter"], arrays["pointwise_filter"], padding="VALID")
    assert out.dtype == arrays["input"].dtype
    np.testing.assert_array_equal(out.data, EXAMPLE["separable_conv2d_valid"])

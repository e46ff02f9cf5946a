"""Every registered op against its torch twin: forward and every input's gradient,
float64 (relative error <= 1e-10) and float32 (<= 1e-4), on hypothesis-drawn cases."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from npmobilenet import Tensor
from npmobilenet.ops import REGISTRY, apply
from npmobilenet.testing.strategies import op_cases

from .torch_twins import TWINS

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-4}


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-12)
    return float(np.max(np.abs(got - expected), initial=0.0)) / scale


def _torch_attrs(attrs):
    return {k: torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v for k, v in attrs.items()}


def test_every_registered_op_has_a_twin():
    assert set(TWINS) == set(REGISTRY)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("op", sorted(REGISTRY))
@given(data=st.data())
def test_op_matches_torch(op, dtype, data):
    case = data.draw(op_cases(op)).astype(dtype)
    ours = [Tensor(a, requires_grad=True) for a in case.inputs]
    out = apply(op, *ours, **{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in case.attrs.items()})
    cotangent = np.random.default_rng(0).standard_normal(out.shape).astype(dtype)
    out.backward(cotangent)

    theirs = [torch.from_numpy(a.copy()).requires_grad_() for a in case.inputs]
    expected = TWINS[op](*theirs, **_torch_attrs(case.attrs))
    expected.backward(torch.from_numpy(cotangent))

    assert out.dtype == dtype
    assert out.shape == tuple(expected.shape)
    assert relative_error(out.data, expected.detach().numpy()) <= TOLERANCE[dtype]
    for name, mine, twin in zip(REGISTRY[op].input_names, ours, theirs):
        assert mine.grad.dtype == dtype, name
        assert relative_error(mine.grad, twin.grad.numpy()) <= TOLERANCE[dtype], name

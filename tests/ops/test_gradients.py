"""Every registered op's vector-Jacobian product against central finite differences (float64)."""

import pytest
from hypothesis import given, strategies as st

from npmobilenet.ops import REGISTRY, apply
from npmobilenet.testing import check_grad
from npmobilenet.testing.strategies import covered_ops, op_cases


def test_every_registered_op_has_a_gradient_case():
    assert covered_ops() == set(REGISTRY)


@pytest.mark.parametrize("op", sorted(REGISTRY))
@given(data=st.data())
def test_vjp_matches_finite_differences(op, data):
    case = data.draw(op_cases(op))
    check_grad(lambda *xs: apply(op, *xs, **case.attrs), *case.inputs,
               names=REGISTRY[op].input_names)

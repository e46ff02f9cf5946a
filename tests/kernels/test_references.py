"""Every fast kernel against its readable reference (kernels/reference.py) over random geometry,
and use_reference_kernels(): whole v1 and v2 training steps and inference plans run on the
references alone and agree with the fast path within 1e-10 in float64."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import npmobilenet as nm
from npmobilenet import functional as F
from npmobilenet.kernels import batchnorm as bn
from npmobilenet.activations import ACTIVATIONS as ACTIVATION_TABLE
from npmobilenet.kernels import depthwise as dw
from npmobilenet.kernels import epilogue as ep
from npmobilenet.kernels import im2col as ic
from npmobilenet.kernels import reference as ref
from npmobilenet.kernels import switch
from npmobilenet.optim import SGD
from npmobilenet.testing.strategies import conv_geometry

DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-12, np.float32: 1e-5}
ACTIVATIONS = st.sampled_from([bn.NO_ACTIVATION, np.inf, 6.0, 0.5])


def assert_close(actual, expected, dtype):
    assert actual.dtype == dtype and actual.shape == expected.shape
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@given(geometry=conv_geometry(), seed=st.integers(0, 2**32 - 1))
def test_im2col_and_col2im_equal_their_references(dtype, geometry, seed):
    x, _ = geometry.arrays(dtype, seed)
    args = ((geometry.kernel), geometry.stride, geometry.dilation, geometry.pads)
    columns = ic.im2col(x, *args, geometry.out_hw)
    np.testing.assert_array_equal(columns, ref.im2col_reference(x, *args, geometry.out_hw))
    assert columns.dtype == dtype
    cotangent = np.random.default_rng(seed).standard_normal(columns.shape).astype(dtype)
    assert_close(ic.col2im(cotangent, x.shape[1:3], *args),
                 ref.col2im_reference(cotangent, x.shape[1:3], *args), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@given(geometry=conv_geometry(depthwise=True), seed=st.integers(0, 2**32 - 1),
       epilogue=st.sampled_from([a.epilogue for a in ACTIVATION_TABLE.values()]), with_bias=st.booleans())
def test_depthwise_with_its_epilogue_equals_the_reference(dtype, geometry, seed, epilogue, with_bias):
    x, w = geometry.arrays(dtype, seed)
    bias = np.linspace(-1, 1, w.shape[2] * w.shape[3]).astype(dtype) if with_bias else None
    args = (geometry.stride, geometry.dilation, geometry.pads)
    assert_close(dw.depthwise_forward(x, w, *args, bias=bias, epilogue=epilogue),
                 ref.depthwise_forward_reference(x, w, *args, bias=bias, epilogue=epilogue), dtype)
    rows, offset = x.reshape(-1, x.shape[3]), np.linspace(-1, 1, x.shape[3]).astype(dtype)
    assert_close(ep.bias_activate(rows.copy(), offset, epilogue),
                 ref.epilogue_reference(rows.copy(), offset, *epilogue), dtype)


@st.composite
def batch_norm_problems(draw):
    rows, channels = draw(st.integers(2, 300)), draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((rows, channels)) * rng.uniform(0.5, 3, channels) + rng.normal(0, 2, channels)
    return x, rng, draw(ACTIVATIONS), draw(st.booleans())


@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=batch_norm_problems())
def test_batch_norm_kernels_equal_their_references(dtype, problem):
    x, rng, clip_max, batch_stats = problem
    x = x.astype(dtype)
    channels = x.shape[1]
    for got, expected in zip(bn.batch_statistics(x), ref.batch_statistics_reference(x)):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(expected).max()))

    scale, offset = rng.uniform(0.5, 2, channels).astype(dtype), rng.normal(0, 1, channels).astype(dtype)
    out = bn.normalize_activate(x, scale, offset, dtype(clip_max), np.empty_like(x))
    assert_close(out, ref.normalize_activate_reference(x, scale, offset, dtype(clip_max), np.empty_like(x)), dtype)

    mean, var = (a.astype(dtype) for a in bn.batch_statistics(x))
    inv_std = (1 / np.sqrt(var + dtype(1e-3))).astype(dtype)
    gamma = rng.uniform(0.5, 2, channels).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    for needs_input in (True, False):
        got = bn.backward(g, x, mean, inv_std, gamma * inv_std, offset, dtype(clip_max), batch_stats,
                          needs_input)
        expected = ref.batch_norm_backward_reference(g, x, mean, inv_std, gamma * inv_std, offset,
                                                     dtype(clip_max), batch_stats, needs_input)
        for name, a, b in zip(("x", "gamma", "beta"), got, expected):
            if a is None or b is None:
                assert a is b is None and name == "x" and not needs_input
                continue
            assert_close(a, b, dtype)


@pytest.fixture
def fast_kernels_forbidden(monkeypatch):
    """Every compiled kernel replaced by one that fails: what still runs is the references."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a fast kernel ran under use_reference_kernels()")

    for module, names in ((dw, ["_FORWARD", "_GRAD_INPUT", "_GRAD_WEIGHT"]), (ic, ["_im2col_rows"]),
                          (bn, ["_channel_sums", "_normalize_activate", "_masked_sums", "_grad_input"]),
                          (ep, ["_span", "_chunks"])):
        for name in names:
            value = getattr(module, name)
            monkeypatch.setattr(module, name, (forbidden, forbidden) if isinstance(value, tuple) else forbidden)


def _model(spec):
    model = nm.build_model(spec, depth_multiplier=0.35, input_size=48, num_classes=5, dtype=np.float64,
                           seed=1, dropout=0.0)
    rng = np.random.default_rng(2)
    state = {k: (rng.uniform(0.5, 1.5, v.shape) if k.endswith(("gamma", "moving_variance"))
                 else rng.normal(0, 0.2, v.shape) if k.endswith(("beta", "moving_mean")) else v)
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model


def _train_step_and_predict(spec, x, labels):
    """Loss, gradients, updated parameters and moving statistics, then eval-mode logits of the
    compiled plan, after one SGD step of a fresh model."""
    model = _model(spec)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = F.cross_entropy(model(x), labels)
    loss.backward()
    grads = {name: p.grad.copy() for name, p in model.named_parameters()}
    optimizer.step()
    model.eval()
    with nm.no_grad():
        logits = model(x).data
    assert model._plan is not None and model._plan.calls == 1
    return loss.item(), grads, model.state_dict(), logits


@pytest.mark.parametrize("spec", ["mobilenet_v1", "mobilenet_v2"])
def test_a_training_step_on_the_references_equals_the_fast_path(spec, fast_kernels_forbidden, monkeypatch):
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((3, 48, 45, 3)), np.array([0, 4, 2])
    with nm.use_reference_kernels():
        assert switch.REFERENCE
        reference = _train_step_and_predict(spec, x, labels)
    assert not switch.REFERENCE
    monkeypatch.undo()  # the fast kernels back
    fast = _train_step_and_predict(spec, x, labels)

    assert abs(reference[0] - fast[0]) <= 1e-10 * abs(fast[0])
    # A gradient that is zero in exact arithmetic (a batch norm's beta when batch statistics
    # follow) is rounding noise on both paths: gradients are compared at no less than 1e-3 of
    # the largest one.
    floor = 1e-3 * max(float(np.abs(g).max()) for g in fast[1].values())
    pairs = [*((f"grad of {k}", v, fast[1][k], floor) for k, v in reference[1].items()),
             *((k, v, fast[2][k], 0.0) for k, v in reference[2].items()),
             ("logits", reference[3], fast[3], 0.0)]
    for name, value, expected, least in pairs:
        assert value.dtype == np.float64
        scale = max(float(np.abs(expected).max()), least)
        assert float(np.abs(value - expected).max()) <= 1e-10 * scale, name

"""The inference plan (batch norm folded, fused epilogues, reused buffers) against the op-by-op
path: same logits and end points, taken exactly when nothing is recorded, never stale, and
never overwriting an array a caller still holds."""

import dataclasses
import math
import tracemalloc

import numpy as np
import pytest

import npmobilenet.functional as F
from npmobilenet import build_model, inference, no_grad
from npmobilenet.io import convert_file
from npmobilenet.activations import ACTIVATIONS, activation
from npmobilenet.autograd import Tensor
from npmobilenet.kernels.epilogue import bias_activate
from npmobilenet.architecture import available_specs, build_graph
from npmobilenet.kinds import KINDS
from npmobilenet.optim import SGD
from tests.io.conftest import CASES as FIXTURE_CASES
from tests.io.conftest import FIXTURES, SIZES

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}
MODELS = {  # name: (spec, options, height, width)
    "v1-SAME-odd": ("mobilenet_v1", {"padding": "SAME"}, 67, 53),
    "v1-symmetric-relu": ("mobilenet_v1", {"padding": "symmetric", "activation": "relu",
                                           "global_pool": True}, 64, 64),
    "v2-symmetric-odd": ("mobilenet_v2", {"padding": "symmetric"}, 45, 70),
    "v2-SAME-os16": ("mobilenet_v2", {"padding": "SAME", "output_stride": 16}, 75, 61),
    "v1-keras-pads": ("mobilenet_v1", {"padding": "keras"}, 66, 64),
    "v2-headless": ("mobilenet_v2", {"num_classes": 0}, 64, 64),
    "v3-large-odd": ("mobilenet_v3_large", {}, 67, 45),
    "v3-small-os16": ("mobilenet_v3_small", {"output_stride": 16}, 61, 64),
    "v3-large-minimalistic-os16": ("mobilenet_v3_large_minimalistic", {"output_stride": 16}, 64, 53),
    "v3-small-minimalistic-odd": ("mobilenet_v3_small_minimalistic", {}, 45, 51),
    "v4-conv-small-odd-os16": ("mobilenet_v4_conv_small", {"output_stride": 16}, 63, 71),
}


def _rel(got, expected):
    return np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-30)


def _model(name, dtype, seed=3):
    spec, options, height, width = MODELS[name]
    model = build_model(spec, depth_multiplier=0.35, input_size=max(height, width), dtype=dtype,
                        seed=seed, **options)
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    for key, value in state.items():  # batch norm that does something, so folding matters
        if key.endswith(("gamma", "moving_variance")):
            state[key] = rng.uniform(0.5, 1.5, value.shape).astype(dtype)
        elif key.endswith(("beta", "moving_mean", "biases")):
            state[key] = rng.normal(0, 0.3, value.shape).astype(dtype)
    model.load_state_dict(state)
    x = rng.standard_normal((2, height, width, 3)).astype(dtype)
    return model.eval(), x


def _ops_path(model, x):
    """Logits and end points from the op-by-op path."""
    model.fast_inference = False
    try:
        with no_grad():
            out = model(x).data
        return out, {name: t.data for name, t in model.end_points.items()}
    finally:
        model.fast_inference = True


def _forbid_op_path(patch):
    """Make every compiled kind's op-by-op forward fail if it is called."""
    def forbidden(*_):
        raise AssertionError("the op-by-op path ran a node the inference plan compiles")
    for name, kind in list(KINDS.items()):
        if kind.compile is not None:
            patch.setitem(KINDS, name, dataclasses.replace(kind, forward=forbidden))


@pytest.fixture
def ops_forbidden(monkeypatch):
    _forbid_op_path(monkeypatch)


@pytest.mark.parametrize("spec", available_specs())
def test_the_plan_compiles_every_kind_of_every_built_in_spec(spec):
    uncompiled = {node.op for node in build_graph(spec).nodes if KINDS[node.op].compile is None}
    assert not uncompiled


def test_the_plan_is_checked_on_every_built_in_spec():
    assert {spec for spec, *_ in MODELS.values()} == set(available_specs())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", MODELS)
def test_plan_matches_op_path_everywhere(name, dtype, monkeypatch):
    model, x = _model(name, dtype)
    expected, expected_points = _ops_path(model, x)
    with monkeypatch.context() as patch:
        _forbid_op_path(patch)  # the plan must not need them
        with no_grad():
            out = model(x)
    assert out.dtype == dtype and out.shape == expected.shape
    assert _rel(out.data, expected) <= TOLERANCE[dtype]
    assert list(model.end_points) == list(expected_points)
    for node, value in model.end_points.items():
        assert value.dtype == dtype and value.shape == expected_points[node].shape, node
        assert _rel(value.data, expected_points[node]) <= TOLERANCE[dtype], node


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize("name", MODELS)
def test_chunked_high_resolution_layers_give_the_whole_batch_result(name, chunk, monkeypatch):
    """Batches of 3 in chunks of 1 and 2 (an uneven last chunk) against the plan on the whole
    batch and the op path: every end point, every dtype."""
    for dtype in (np.float64, np.float32):
        model, x = _model(name, dtype)
        x = np.concatenate([x, x[:1] * 0.5])
        expected, expected_points = _ops_path(model, x)
        with no_grad():
            monkeypatch.setattr(inference, "CHUNK_BYTES", 1 << 40)
            model(x)
            whole = {k: t.data.copy() for k, t in model.end_points.items()}
            values_per_image = model._plan.chunk_values_per_pixel * x.shape[1] * x.shape[2] * x.itemsize
            monkeypatch.setattr(inference, "CHUNK_BYTES", chunk * values_per_image)
            assert model._plan.chunk_size(x) == chunk and model._plan.chunked
            out = model(x)
        assert out.dtype == dtype and _rel(out.data, expected) <= TOLERANCE[dtype]
        for node, value in model.end_points.items():
            assert value.shape == expected_points[node].shape and value.dtype == dtype, node
            assert _rel(value.data, whole[node]) <= TOLERANCE[dtype], node
            assert _rel(value.data, expected_points[node]) <= TOLERANCE[dtype], node


def test_chunked_results_held_by_the_caller_are_never_overwritten(monkeypatch):
    model, x = _model("v2-symmetric-odd", np.float32)
    monkeypatch.setattr(inference, "CHUNK_BYTES", 1)  # one image a chunk
    with no_grad():
        first = model(x)
        points = model.end_points
        kept = {name: t.data.copy() for name, t in points.items()}
        model(x[::-1].copy())
    for name, t in points.items():
        np.testing.assert_array_equal(t.data, kept[name], err_msg=name)
    np.testing.assert_array_equal(first.data, kept[model.graph.output])


def test_plan_taken_when_nothing_is_recorded(ops_forbidden):
    model, x = _model("v2-symmetric-odd", np.float32)
    with no_grad():
        model(x)
    for p in model.parameters():  # grad enabled, but no parameter nor input requires grad
        p.requires_grad = False
    assert not model(x).requires_grad


def test_op_path_taken_when_grad_is_recorded():
    model, x = _model("v2-symmetric-odd", np.float64)
    logits = model(x)  # eval mode, grad enabled, parameters require grad: backprop must work
    assert logits.requires_grad
    F.sum(logits).backward()
    assert all(p.grad is not None for p in model.parameters())
    with no_grad():
        model.train()
        training = model(x)  # training mode: batch statistics, never the plan
    model.eval()
    assert _rel(training.data, _ops_path(model, x)[0]) > 1e-3


def test_forward_from_an_endpoint_uses_the_plan(ops_forbidden):
    model, x = _model("v2-symmetric-odd", np.float64)
    with no_grad():
        logits = model(x).data
        features = model.end_points["expanded_conv_6/project"].data.copy()
        again = model.forward_from("expanded_conv_6/project", features)
    assert _rel(again.data, logits) <= 1e-12


def test_held_results_are_never_overwritten_and_free_buffers_are_reused():
    model, x = _model("v1-SAME-odd", np.float32)
    other = np.random.default_rng(9).standard_normal(x.shape).astype(np.float32)
    with no_grad():
        first = model(x)
        points = model.end_points
        kept = {name: t.data.copy() for name, t in points.items()}
        model(other)
        for name, t in points.items():
            np.testing.assert_array_equal(t.data, kept[name], err_msg=name)
        np.testing.assert_array_equal(first.data, kept[model.graph.output])
        # Nobody holds the previous call's activations now: the next call writes into them.
        address = model.end_points["Conv2d_3_pointwise"].data.ctypes.data
        del first, points
        model(x)
        assert model.end_points["Conv2d_3_pointwise"].data.ctypes.data == address
        np.testing.assert_array_equal(model.end_points["Conv2d_3_pointwise"].data, kept["Conv2d_3_pointwise"])


def test_headless_features_returned_earlier_stay_valid():
    model, x = _model("v2-headless", np.float32)
    with no_grad():
        a = model(x)
        a_copy = a.data.copy()
        b = model(x[::-1].copy())
    np.testing.assert_array_equal(a.data, a_copy)
    assert not np.array_equal(a.data, b.data)


def test_several_input_shapes_in_turn():
    model, x = _model("v2-SAME-os16", np.float64)
    inputs = [x, x[:1, :64, :64].copy(), x[:, :50, :67].copy(), x]
    for image in inputs:
        with no_grad():
            got = model(image).data
        assert _rel(got, _ops_path(model, image)[0]) <= 1e-10


def test_plan_follows_new_parameters():
    model, x = _model("v1-SAME-odd", np.float64)
    with no_grad():
        before = model(x).data.copy()
    state = model.state_dict()
    for key in state:
        if key.endswith(("moving_mean", "gamma")):
            state[key] = state[key] * 1.5 + 0.1
    model.load_state_dict(state)
    with no_grad():
        after = model(x).data
    assert _rel(after, before) > 1e-3
    assert _rel(after, _ops_path(model, x)[0]) <= 1e-10


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_plan_follows_an_optimizer_step(mode):
    """Training (in either mode) then evaluating: the folded weights are refolded."""
    model, x = _model("v2-symmetric-odd", np.float64)
    with no_grad():
        model(x)  # builds the plan from the current weights
    optimizer = SGD(model.parameters(), lr=0.5)
    model.train(mode == "train")
    F.cross_entropy(model(x), np.array([1, 2])).backward()
    optimizer.step()
    if mode == "train":
        model.eval()
    with no_grad():
        after = model(x).data
    assert _rel(after, _ops_path(model, x)[0]) <= 1e-10


@pytest.mark.parametrize("case", FIXTURE_CASES, ids=[c.weights for c in FIXTURE_CASES])
def test_converted_fixtures_through_the_plan(case, ops_forbidden):
    """The conversion fixtures' logits (written by torch, Keras, timm) through the plan."""
    data = np.load(FIXTURES / case.expected)
    for dtype, tolerance in ((np.float32, 1e-4), (np.float64, 1e-9)):
        model = convert_file(case.source, case.arch, FIXTURES / case.weights,
                             case.depth_multiplier, dtype=dtype)
        for size in SIZES:
            with no_grad():
                logits = model(case.inputs(data, size, dtype)).data
            assert logits.dtype == dtype
            assert _rel(logits, data[f"logits_{size}"]) < tolerance, (dtype, size)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [3, 50_000])  # one thread, and the parallel variant
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_the_epilogue_is_the_bias_then_the_activation_bit_for_bit(rows, name, dtype):
    rng = np.random.default_rng(0)
    y = (4 * rng.standard_normal((rows, 24))).astype(dtype)
    bias = rng.standard_normal(24).astype(dtype)
    act = activation(name)
    expected = act.apply(Tensor(y + bias)).data  # the op-by-op composite
    out = bias_activate(y, bias, act.epilogue)
    assert out is y and y.dtype == dtype
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("chunk", [None, 1, 2])
@pytest.mark.parametrize("name", ["v2-symmetric-odd", "v3-large-odd", "v4-conv-small-odd-os16", "v1-SAME-odd"])
def test_naming_the_end_points_keeps_those_with_the_same_values(name, chunk, monkeypatch):
    model, x = _model(name, np.float64)
    x = np.concatenate([x, x[:1] * 0.5])
    wanted = [model.graph.nodes[1].name, model.graph.nodes[len(model.graph.nodes) // 2].name]
    with no_grad():
        expected = model(x).data.copy()
        everything = {k: t.data.copy() for k, t in model.end_points.items()}
        if chunk is not None:
            per_image = model._plan.chunk_values_per_pixel * x.shape[1] * x.shape[2] * x.itemsize
            monkeypatch.setattr(inference, "CHUNK_BYTES", chunk * per_image)
        out = model(x, end_points=wanted)
    assert set(model.end_points) == {*wanted, model.graph.output}
    assert _rel(out.data, expected) <= 1e-12
    for node in wanted:
        assert _rel(model.end_points[node].data, everything[node]) <= 1e-12, node
    model.train()  # the op path filters the same way
    out = model(x, end_points=wanted)
    assert set(model.end_points) == {*wanted, model.graph.output}


def test_an_unknown_end_point_is_named():
    model, x = _model("v1-SAME-odd", np.float32)
    with pytest.raises(ValueError, match="no nodes named \\['Conv2d_99'\\]"):
        model(x, end_points=["Conv2d_99"])


def test_the_output_alone_takes_a_fraction_of_the_memory_and_reuses_it():
    model = build_model("mobilenet_v2", depth_multiplier=0.5, input_size=96, num_classes=10, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((8, 96, 96, 3)).astype(np.float32)

    def peak(**options):
        model.eval()  # a new plan: its arrays are allocated again
        model.end_points = {}  # ... and the last call's are gone before measuring
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        result = model(x, **options)
        return result, tracemalloc.get_traced_memory()[1] - start

    with no_grad():
        model(x), model(x, end_points=())  # kernels compiled before anything is measured
        tracemalloc.start()
        try:
            _, every_end_point = peak()
            first, output_only = peak(end_points=())
            kept = first.data.copy()
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            second = model(x[::-1].copy(), end_points=())
            again = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
    activations = sum(math.prod(node.out_shape) for node in model.graph.nodes) * 8 * 4
    assert every_end_point > activations
    assert output_only < every_end_point / 2, (output_only, every_end_point)
    assert again < output_only / 10, (again, output_only)  # the pool's blocks were reused
    np.testing.assert_array_equal(first.data, kept)  # ... except the one the caller holds
    assert not np.array_equal(first.data, second.data)

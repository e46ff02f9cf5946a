"""The node-kind and block tables: activations checked against finite differences and torch,
every kind exercised by a torch-twinned model, a new kind added with no edit elsewhere, the
papers' parameter counts, and errors for bad rows naming the JSON path."""

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

import npmobilenet as nm
from npmobilenet import functional as F
from npmobilenet.activations import ACTIVATIONS
from npmobilenet.kernels.epilogue import bias_activate
from npmobilenet.architecture import build_graph, load_spec
from npmobilenet.architecture.blocks import BLOCKS, BlockType, register_block
from npmobilenet.cli import main
from npmobilenet.kinds import KINDS, Layout, NodeKind, Param, register_kind
from npmobilenet.optim import SGD
from npmobilenet.testing import check_grad
from tests.ops.torch_twins import ACTIVATIONS as TORCH_ACTIVATIONS
from tests.test_model_torch import CASES as TWINNED_MODELS

# Away from the kinks at -3, 0, 3 and 6, where a finite difference straddles two slopes.
_values = arrays(np.float64, st.integers(1, 12), elements=st.floats(-8, 8)).map(
    lambda a: np.where(np.min(np.abs(a[..., None] - np.array([-3.0, 0.0, 3.0, 6.0])), -1) < 1e-3,
                       a + 0.01, a))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(x=_values)
def test_activation_gradient_matches_finite_differences(name, x):
    check_grad(ACTIVATIONS[name].apply, x, names=("x",))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(x=_values)
def test_activation_matches_torch_and_its_epilogue(name, x):
    activation = ACTIVATIONS[name]
    expected = TORCH_ACTIVATIONS[name](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(activation.apply(x).data, expected, rtol=1e-15, atol=1e-15)
    for dtype in (np.float32, np.float64):
        values = x.astype(dtype).reshape(1, -1)
        fused = bias_activate(values.copy(), np.zeros(values.shape[1], dtype), activation.epilogue)
        assert fused.dtype == dtype
        np.testing.assert_array_equal(fused, activation.apply(values).data)


def test_every_kind_is_checked_against_a_torch_twin():
    """tests/test_model_torch.py compares these models, forward and backward, with torch."""
    covered = {node.op for spec, options, size, batch in TWINNED_MODELS.values()
               for node in build_graph(spec, input_size=size, **options).nodes}
    assert covered | {"dropout"} == set(KINDS)  # dropout: an op checked on its own, identity here


# -- a kind added in one module ------------------------------------------------------------------

def _scale_layout(attrs, input_shapes):
    (h, w, c), = input_shapes
    return Layout((h, w, c), params={"gamma": Param((c,), "ones")}, macs=h * w * c)


def _scale_forward(model, node, x):
    return F.mul(x, model.param(node, "gamma"))


def _expand_scale_row(row, b):
    b.node(b.scope("Scale"), "toy_scale")


@pytest.fixture
def toy_kind():
    """A per-channel scale: a kind (no compiled step) and the block type that places it."""
    kind = register_kind(NodeKind("toy_scale", _scale_layout, _scale_forward))
    block = register_block(BlockType("Scale", ("v2",), {}, {}, _expand_scale_row))
    try:
        yield kind, block
    finally:
        del KINDS[kind.name], BLOCKS[block.name]


def test_a_new_kind_needs_no_edit_elsewhere(toy_kind, tmp_path):
    spec = load_spec("mobilenet_v2")
    spec["name"] = "v2_with_scale"
    spec["body"].insert(2, {"type": "Scale"})
    model = nm.build_model(spec, depth_multiplier=0.35, input_size=64, num_classes=4, seed=0)
    assert "Scale/gamma" in dict(model.named_parameters())
    rows = {row["name"]: row for row in model.graph.summary_dict()["layers"]}
    assert rows["Scale"]["op"] == "toy_scale" and rows["Scale"]["params"] == 8  # the channels after expanded_conv

    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    optimizer = SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(x), np.array([0, 3])).backward()
    assert model.param(model.graph.node("Scale"), "gamma").grad is not None
    optimizer.step()

    model.eval()
    with nm.no_grad():
        planned = model(x).data  # the plan runs the kind's forward for its node only
    model.fast_inference = False
    with nm.no_grad():
        np.testing.assert_allclose(planned, model(x).data, rtol=1e-5, atol=1e-6)

    path = tmp_path / "scaled.safetensors"
    nm.save(model, path)
    loaded = nm.load(path)
    with nm.no_grad():
        np.testing.assert_allclose(loaded(x).data, planned, rtol=1e-5, atol=1e-6)


# -- the papers' counts and bad rows -------------------------------------------------------------

@pytest.mark.parametrize("arch, params", [
    ("mobilenet_v3_large", 5_483_032), ("mobilenet_v3_small", 2_542_856),
    ("mobilenet_v3_large_minimalistic", 3_924_288), ("mobilenet_v3_small_minimalistic", 2_044_736),
    ("mobilenet_v4_conv_small", 3_774_024)])
def test_summary_gives_the_reference_parameter_counts(arch, params, capsys):
    assert main(["summary", arch, "--num-classes", "1000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["params"] == params


def _v3(**update):
    spec = load_spec("mobilenet_v3_small")
    spec["body"][1].update(update)
    return spec


def _v4(**update):
    spec = load_spec("mobilenet_v4_conv_small")
    spec["body"][5].update(update)
    return spec


@pytest.mark.parametrize("spec, message", [
    (_v3(activation="gelu"), 'body[1].activation: expected one of "identity", "relu", "relu6", '
                             '"hard_swish", got "gelu"'),
    (_v3(t=4), "body[1]: give the expanded width as exactly one of t (ratio) or exp (channels)"),
    ({**load_spec("mobilenet_v3_small"),
      "body": [{"type": "Conv", "kernel": 3, "stride": 2, "depth": 16, "se": True}]},
     "body[0].se: unknown field"),
    (_v4(start_kernel=0, mid_kernel=0, t=1, s=1),
     "body[5]: a UniversalInvertedBottleneck needs a depthwise convolution (start_kernel or "
     "mid_kernel > 0) or an expansion (t != 1)"),
    (_v4(start_kernel=0, mid_kernel=0, t=4, s=2), "body[5].s: stride 2 needs a depthwise convolution"),
    (_v4(mid_kernel=-1), "body[5].mid_kernel: expected an integer in [0, 31], got -1"),
])
def test_bad_rows_name_the_json_path(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_spec(spec)


def test_the_plan_needs_no_kind_by_name(monkeypatch):
    """Every kind of every built-in spec runs through the plan from the table alone."""
    for name, kind in list(KINDS.items()):
        monkeypatch.setitem(KINDS, name, dataclasses.replace(kind, forward=None))
    for spec in nm.available_specs():
        model = nm.build_model(spec, depth_multiplier=0.35, input_size=45, num_classes=3).eval()
        with nm.no_grad():
            out = model(np.zeros((1, 45, 45, 3), np.float32))
        assert out.shape == (1, 3) and np.isfinite(out.data).all(), spec


# -- every kind's gradient against finite differences --------------------------------------------

def _first_of_each_kind(graph):
    found = {}
    for node in graph.nodes:
        if node.layout.params:
            found.setdefault(node.op, node)
    return found


@pytest.mark.parametrize("spec", ["mobilenet_v3_small", "mobilenet_v4_conv_small"])
def test_every_kinds_gradients_match_finite_differences(spec):
    """Input and parameter gradients of each kind's first node, through the whole model, in
    float64. Eval mode: batch norm with batch statistics over a batch of two is too sharp for
    finite differences (its backward is checked on its own and against torch's)."""
    model = nm.build_model(spec, depth_multiplier=0.35, input_size=33, num_classes=3,
                           dropout=0.0, dtype=np.float64, seed=0).eval()
    rng = np.random.default_rng(1)
    state = model.state_dict()  # statistics and shifts off their initial values, so that no
    for key, value in state.items():  # activation sits exactly on a ReLU's kink
        if key.endswith(("gamma", "moving_variance")):
            state[key] = rng.uniform(0.5, 1.5, value.shape)
        elif key.endswith(("beta", "moving_mean", "biases")):
            state[key] = rng.normal(0, 0.3, value.shape)
    model.load_state_dict(state)
    x = rng.standard_normal((2, 33, 33, 3))
    check_grad(model, x, names=("x",))
    for node in _first_of_each_kind(model.graph).values():
        for key in node.layout.params:
            name = f"{node.name}/{key}"
            original = model.param(node, key)

            def logits(weights, name=name):
                model._params[name] = weights  # the model reads this parameter from the test
                return model(x)

            try:
                check_grad(logits, original.data.copy(), names=(name,))
            finally:
                model._params[name] = original

"""Model: predicted vs actual shapes, modes, parameters, state dicts, initialisers, errors."""

import re
from pathlib import Path

import numpy as np
import pytest

from npmobilenet.autograd import Tensor, no_grad
from npmobilenet.model import build_model
from npmobilenet.architecture import build_graph

SPECS = Path(__file__).parent / "architecture"


def _images(n, size, dtype=np.float32, seed=0):
    h, w = (size, size) if isinstance(size, int) else size
    return np.random.default_rng(seed).standard_normal((n, h, w, 3)).astype(dtype)


def _check_shapes(model, x):
    model.eval()
    with no_grad():
        out = model(x)
    assert out.dtype == x.dtype
    assert list(model.end_points) == [n.name for n in model.graph.nodes]
    for node in model.graph.nodes:
        assert model.end_points[node.name].shape == (x.shape[0], *node.out_shape), node.name
    return out


# Every combination runs a real forward (batch 1, eval, no_grad); odd sizes at two widths.
SHAPE_CASES = [(alpha, size) for alpha in (1.0, 0.75, 0.5, 0.35) for size in (224, 192, 160, 128, 96)]
SHAPE_CASES += [(alpha, size) for alpha in (1.0, 0.35) for size in (113, 75)]


@pytest.mark.parametrize("alpha, size", SHAPE_CASES)
@pytest.mark.parametrize("spec", ["mobilenet_v1", "mobilenet_v2"])
def test_predicted_shapes_equal_actual(spec, alpha, size):
    model = build_model(spec, depth_multiplier=alpha, input_size=size, num_classes=10, seed=0)
    out = _check_shapes(model, _images(1, size))
    assert out.shape == (1, 10)


@pytest.mark.parametrize("spec", ["mobilenet_v1", "mobilenet_v2"])
@pytest.mark.parametrize("output_stride, final", [(8, 28), (16, 14)])
def test_output_stride_activations(spec, output_stride, final):
    model = build_model(spec, depth_multiplier=0.35, output_stride=output_stride, num_classes=0, seed=0)
    out = _check_shapes(model, _images(1, 224))
    assert out.shape[1:3] == (final, final)


def test_float64_is_kept_and_other_sizes_run():
    model = build_model("mobilenet_v2", depth_multiplier=0.35, dtype=np.float64, seed=0, num_classes=5)
    assert all(p.dtype == np.float64 for p in model.parameters())
    model.eval()
    with no_grad():
        out = model(_images(2, (96, 64), np.float64))
    assert out.dtype == np.float64 and out.shape == (2, 5)
    assert model.end_points["Conv_1"].shape == (2, 3, 2, 1280)


def test_input_errors():
    model = build_model("mobilenet_v1", depth_multiplier=0.25, seed=0)
    with pytest.raises(ValueError, match="x: dtype float64 differs from the model's float32"):
        model(_images(1, 64, np.float64))
    with pytest.raises(ValueError, match=re.escape("x: expected NHWC images (N, H, W, 3), got shape (1, 3, 64, 64)")):
        model(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="x: images of 16x16 are smaller"):
        model(_images(1, 16))
    with pytest.raises(ValueError, match="x: the input gives 10x10 features.*global_pool=True"):
        model.eval()(_images(1, 320))


def test_train_updates_moving_statistics_and_eval_does_not():
    model = build_model("mobilenet_v2", depth_multiplier=0.35, input_size=64, seed=0, dropout=0.5)
    key = "Conv/BatchNorm/moving_mean"
    before = model.state_dict()[key]
    x = _images(2, 64)
    with no_grad():
        a, b = model(x).data, model(x).data
    assert not np.array_equal(a, b)  # dropout masks differ between calls
    after = model.state_dict()[key]
    assert not np.allclose(before, after)
    model.eval()
    with no_grad():
        c, d = model(x).data, model(x).data
    np.testing.assert_array_equal(c, d)
    np.testing.assert_array_equal(model.state_dict()[key], after)
    assert model.train() is model and model.training


def test_parameters_and_buffers():
    model = build_model("mobilenet_v2", seed=0)
    names = [name for name, _ in model.named_parameters()]
    assert names == list(model.graph.parameter_shapes())
    assert model.num_parameters() == 3_504_872
    assert all(p.requires_grad for p in model.parameters())
    buffers = dict(model.named_buffers())
    assert not set(buffers) & set(names)
    assert set(model.state_dict()) == set(names) | set(buffers)
    assert {k for k in names if k.startswith("Logits/")} == {"Logits/weights", "Logits/biases"}


def test_state_dict_round_trip_and_errors():
    a = build_model("mobilenet_v1", depth_multiplier=0.25, input_size=64, seed=1)
    b = build_model("mobilenet_v1", depth_multiplier=0.25, input_size=64, seed=2)
    state = a.state_dict()
    assert not np.array_equal(state["Conv2d_0/weights"], b.state_dict()["Conv2d_0/weights"])
    b.load_state_dict(state)
    for key, value in b.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    state["Conv2d_0/weights"][...] = 7  # state_dict returns copies
    assert not np.any(a.state_dict()["Conv2d_0/weights"] == 7)

    bad = b.state_dict()
    del bad["Logits/biases"]
    bad["Extra/weights"] = np.zeros(3, np.float32)
    bad["Conv2d_0/weights"] = np.zeros((3, 3, 3, 9), np.float32)
    snapshot = b.state_dict()
    with pytest.raises(ValueError) as error:
        b.load_state_dict(bad)
    message = str(error.value)
    assert "mis-shaped keys: Conv2d_0/weights: expected (3, 3, 3, 8), got (3, 3, 3, 9)" in message
    assert "missing keys: Logits/biases" in message and "unexpected keys: Extra/weights" in message
    for key, value in b.state_dict().items():  # nothing was loaded
        np.testing.assert_array_equal(value, snapshot[key])
    del bad["Conv2d_0/weights"]
    result = b.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["Conv2d_0/weights", "Logits/biases"]
    assert result.unexpected_keys == ["Extra/weights"]


def test_initialisers():
    tv = build_model("mobilenet_v2", seed=0).state_dict()
    w = tv["Conv_1/weights"]  # fan_out = 1 * 1 * 1280
    assert abs(w.std() / np.sqrt(2 / 1280) - 1) < 0.02 and abs(w.mean()) < 1e-3
    dw = tv["expanded_conv_16/depthwise/weights"]  # fan_out = 3 * 3 * 960
    assert abs(dw.std() / np.sqrt(2 / (9 * 960)) - 1) < 0.05
    assert abs(tv["Logits/weights"].std() / 0.01 - 1) < 0.02
    np.testing.assert_array_equal(tv["Conv/BatchNorm/gamma"], 1)
    np.testing.assert_array_equal(tv["Conv/BatchNorm/beta"], 0)
    np.testing.assert_array_equal(tv["Logits/biases"], 0)
    np.testing.assert_array_equal(tv["Conv/BatchNorm/moving_variance"], 1)

    slim = build_model("mobilenet_v1", seed=0).state_dict()["Conv2d_13_pointwise/weights"]
    assert np.abs(slim).max() <= 0.18  # truncated at two standard deviations
    assert abs(slim.std() / (0.09 * 0.87962566) - 1) < 0.01  # std of a 2-sigma truncated normal

    again = build_model("mobilenet_v2", seed=0).state_dict()
    assert all(np.array_equal(again[k], tv[k]) for k in tv)
    wide = build_model("mobilenet_v2", seed=0, dtype=np.float64).state_dict()
    np.testing.assert_array_equal(wide["Conv/weights"].astype(np.float32), tv["Conv/weights"])


def test_user_specs():
    cifar = build_model(SPECS / "cifar10_mobilenet_v1.json", seed=0)
    # v1 body kernels + batch norm (3,185,088 + 2 * 10,944) + a 1024 x 10 linear layer with bias.
    assert cifar.num_parameters() == 3_185_088 + 21_888 + 10_250
    assert cifar.graph.node("Conv2d_0").attrs["activation"] == "relu"
    cifar.eval()
    with no_grad():
        assert cifar(_images(2, 32)).shape == (2, 10)
    eight = build_graph(SPECS / "mobilenet_v2_8class.json")
    assert eight.totals()["params"] == 3_504_872 - 1_281_000 + 1280 * 8 + 8
    assert eight.node("Conv").attrs["padding"] == "SAME"


def test_headless_model_returns_features():
    model = build_model("mobilenet_v1", depth_multiplier=0.25, num_classes=0, seed=0).eval()
    with no_grad():
        out = model(Tensor(_images(1, 96)))
    assert out.shape == (1, 3, 3, 256)

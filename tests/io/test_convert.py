"""Every fixture converts and reproduces its framework's logits; wrong inputs are named."""

import numpy as np
import pytest

from npmobilenet.io import convert_file, convert_state, read_torch_state_dict
from npmobilenet.io.convert import _flatten_keras
from npmobilenet.io.keras_h5 import read_keras_h5

from .conftest import CASES, FIXTURES, SIZES, relative_error

_models = {}


def _converted(case, dtype=np.float32):
    key = (case.weights, np.dtype(dtype).name)
    if key not in _models:
        _models[key] = convert_file(case.source, case.arch, FIXTURES / case.weights,
                                    case.depth_multiplier, dtype=dtype)
    return _models[key]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", CASES, ids=[c.weights for c in CASES])
def test_fixture_logits_float32(case, size):
    model = _converted(case)
    data = np.load(FIXTURES / case.expected)
    x = case.inputs(data, size)
    assert data[f"x_{size}"].dtype == np.float32
    logits = model(x).data
    assert logits.dtype == np.float32
    assert logits.shape == data[f"logits_{size}"].shape
    assert relative_error(logits, data[f"logits_{size}"]) < 1e-4


FLOAT64_CASES = [c for c in CASES if not c.weights.endswith(("_keras3.h5", ".safetensors"))]


@pytest.mark.parametrize("case", FLOAT64_CASES, ids=[c.weights for c in FLOAT64_CASES])
def test_fixture_logits_float64(case):
    model = _converted(case, np.float64)
    data = np.load(FIXTURES / case.expected)
    for size in SIZES:
        logits = model(case.inputs(data, size, np.float64)).data
        assert logits.dtype == np.float64
        assert relative_error(logits, data[f"logits_{size}"]) < 1e-9


@pytest.mark.parametrize("case", CASES, ids=[c.weights for c in CASES])
def test_fixture_logits_depend_on_the_input(case):
    """Random batch-norm statistics can make a net blind to its input: these are not."""
    data = np.load(FIXTURES / case.expected)
    logits = data[f"logits_{SIZES[0]}"]
    assert relative_error(logits[0], logits[1]) > 1e-2


def test_conversion_metadata():
    model = _converted(CASES[1])
    o = model.graph.options
    assert (o.depth_multiplier, o.num_classes, o.bn_eps, o.padding) == (0.25, 10, 1e-3, "keras")
    assert model.preprocess["name"] == "keras"
    assert not model.training
    tv = _converted(CASES[0])
    o = tv.graph.options
    assert (o.bn_eps, o.padding, tv.preprocess["name"]) == (1e-5, "symmetric", "torchvision")


def test_layouts_are_transposed():
    tensors = read_torch_state_dict(FIXTURES / "torchvision_mobilenet_v2.pth")
    state = _converted(CASES[0]).state_dict()
    w = tensors["features.0.0.weight"]  # (O, I, kh, kw)
    assert state["Conv/weights"][2, 1, 0, 5] == w[5, 0, 2, 1]
    dw = tensors["features.2.conv.1.0.weight"]  # (C, 1, kh, kw)
    assert state["expanded_conv_1/depthwise/weights"][0, 2, 7, 0] == dw[7, 0, 0, 2]
    fc = tensors["classifier.1.weight"]  # (out, in)
    assert state["Logits/weights"][11, 3] == fc[3, 11]
    np.testing.assert_array_equal(state["Conv_1/BatchNorm/moving_variance"],
                                  tensors["features.18.1.running_var"])


def test_the_fixtures_discriminate_eps_and_padding():
    """A wrong eps or Keras v1's padding replaced by SAME moves the logits far past 1e-4."""
    tensors = read_torch_state_dict(FIXTURES / "torchvision_mobilenet_v2.pth")
    data = np.load(FIXTURES / "expected_torchvision_mobilenet_v2.npz")
    model = convert_state("torchvision", "mobilenet_v2", tensors)
    for node in model.graph.nodes:
        if node.attrs.get("batch_norm"):
            node.attrs["batch_norm"] = {**node.attrs["batch_norm"], "eps": 1e-3}
    assert relative_error(model(data["x_64x64"]).data, data["logits_64x64"]) > 1e-3

    v1 = convert_file("keras", "mobilenet_v1", FIXTURES / "keras_mobilenet_v1.h5")
    data = np.load(FIXTURES / "expected_keras_mobilenet_v1.npz")
    for node in v1.graph.nodes:
        if node.op == "depthwise":
            node.attrs["padding"] = "SAME"
    assert relative_error(v1(data["x_64x64"]).data, data["logits_64x64"]) < 1e-4  # even: equal
    assert relative_error(v1(data["x_67x45"]).data, data["logits_67x45"]) > 1e-2  # odd: not


def test_wrong_arch_names_the_tensor():
    with pytest.raises(ValueError, match=r"(?s)does not match mobilenet_v2.*missing tensor 'Conv1/kernel'"):
        convert_file("keras", "mobilenet_v2", FIXTURES / "keras_mobilenet_v1.h5")
    tensors = _flatten_keras(read_keras_h5(FIXTURES / "keras_mobilenet_v2.h5"))
    tensors["conv_preds/bias"] = tensors["predictions/bias"]
    with pytest.raises(ValueError, match=r"missing tensor 'conv1/kernel'"):
        convert_state("keras", "mobilenet_v1", tensors)
    with pytest.raises(ValueError, match="torchvision has no mobilenet_v1"):
        convert_file("torchvision", "mobilenet_v1", FIXTURES / "torchvision_mobilenet_v2.pth")


def test_wrong_multiplier_names_expected_and_found_shapes():
    with pytest.raises(ValueError) as info:
        convert_file("torchvision", "mobilenet_v2", FIXTURES / "torchvision_mobilenet_v2.pth",
                     depth_multiplier=0.5)
    message = str(info.value)
    assert "depth_multiplier 0.5" in message
    assert ("tensor 'features.0.0.weight' (for Conv/weights): expected shape (16, 3, 3, 3), "
            "found (8, 3, 3, 3)") in message


def test_missing_and_misshaped_tensors():
    tensors = read_torch_state_dict(FIXTURES / "torchvision_mobilenet_v2.pth")
    del tensors["features.5.conv.1.1.running_var"]
    with pytest.raises(ValueError, match=r"missing tensor 'features\.5\.conv\.1\.1\.running_var' "
                                         r"\(for expanded_conv_4/depthwise/BatchNorm/moving_variance"):
        convert_state("torchvision", "mobilenet_v2", tensors, depth_multiplier=0.25)
    tensors = read_torch_state_dict(FIXTURES / "torchvision_mobilenet_v2.pth")
    tensors["features.3.conv.2.weight"] = tensors["features.3.conv.2.weight"][:, :-1]
    with pytest.raises(ValueError, match=r"features\.3\.conv\.2\.weight.*expected shape \(8, 48, 1, 1\), "
                                         r"found \(8, 47, 1, 1\)"):
        convert_state("torchvision", "mobilenet_v2", tensors, depth_multiplier=0.25)


def test_extra_tensors_are_reported():
    tensors = read_torch_state_dict(FIXTURES / "torchvision_mobilenet_v2.pth")
    tensors["features.19.0.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"does not use: features\.19\.0\.weight"):
        convert_state("torchvision", "mobilenet_v2", tensors)


@pytest.mark.parametrize("name, value, message", [
    ("features.0.0.weight", np.nan, r"features\.0\.0\.weight: holds a non-finite value \(nan"),
    ("classifier.1.bias", -np.inf, r"classifier\.1\.bias: holds a non-finite value \(-inf"),
    ("features.0.1.running_var", -0.5, r"features\.0\.1\.running_var: a moving variance is negative"),
])
def test_non_finite_weights_and_negative_variances_are_refused_by_source_name(name, value, message):
    tensors = read_torch_state_dict(FIXTURES / "torchvision_mobilenet_v2.pth")
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = value
    with pytest.raises(ValueError, match=message):
        convert_state("torchvision", "mobilenet_v2", tensors)


def test_a_float64_value_infinite_in_float32_is_refused():
    tensors = {name: value.astype(np.float64) if value.dtype == np.float32 else value
               for name, value in read_torch_state_dict(FIXTURES / "torchvision_mobilenet_v2.pth").items()}
    tensors["classifier.1.bias"][0] = 1e300
    convert_state("torchvision", "mobilenet_v2", tensors, dtype=np.float64)  # finite in float64
    with pytest.raises(ValueError, match=r"Logits/biases: holds a non-finite value \(inf"):
        convert_state("torchvision", "mobilenet_v2", tensors, dtype=np.float32)

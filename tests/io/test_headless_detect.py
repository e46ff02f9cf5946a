"""Headless files (Keras include_top=False, torchvision/timm backbones) become models returning
pooled features; ``convert SRC DST`` detects format, framework and architecture; a wrong
``--from`` is told what the file looks like."""

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from npmobilenet.io import load, read_torch_state_dict, save
from npmobilenet.io.convert import convert
from npmobilenet.io.safetensors_weights import read_safetensors
from npmobilenet.train import replace_head

from .conftest import FIXTURES, SIZES, relative_error
from .test_cli import _run

KERAS_HEADLESS = ["keras_mobilenet_v2_notop.h5", "keras_mobilenet_v1_notop_avg.keras"]


@pytest.mark.parametrize("name", KERAS_HEADLESS)
def test_keras_bases_without_top_return_keras_pooled_features(name):
    """include_top=False with pooling="avg" (what Keras returns) or without pooling (the mean of
    Keras' feature map): float32 within 1e-4 at every size."""
    result = convert(FIXTURES / name)
    assert result.model.graph.options.num_classes == 0
    assert any("pooled features" in note for note in result.notes)
    data = np.load(FIXTURES / f"expected_{name.split('.')[0]}.npz")
    for size in SIZES:
        features = result.model(data[f"x_{size}"]).data
        assert features.shape == data[f"features_{size}"].shape
        assert relative_error(features, data[f"features_{size}"]) < 1e-4


def _torch_file(tensors, path):
    torch.save({name: torch.from_numpy(np.array(value)) for name, value in tensors.items()}, path)
    return path


@pytest.mark.parametrize("weights, drop, endpoint", [
    ("torchvision_mobilenet_v2.pth", "classifier.", "AvgPool"),
    ("torchvision_mobilenet_v3_small.pth", "classifier.", "AvgPool"),
    ("timm_mobilenet_v4_conv_small.pth", "classifier.", "Conv_6"),  # num_classes=0 keeps conv_head
])
def test_backbone_only_state_dicts_return_the_full_models_features(weights, drop, endpoint, tmp_path):
    full = convert(FIXTURES / weights).model
    x = np.load(FIXTURES / f"expected_{weights.split('.')[0]}.npz")["x_67x45"]
    full(x)
    expected = full.end_points[endpoint].data
    tensors = {k: v for k, v in read_torch_state_dict(FIXTURES / weights).items() if not k.startswith(drop)}
    path = _torch_file(tensors, tmp_path / "backbone.pth")
    headless = convert(path).model
    assert headless.graph.options.num_classes == 0 and headless.graph.nodes[-1].name == endpoint
    np.testing.assert_allclose(headless(x).data, expected, rtol=0, atol=1e-6)


def test_model_features_state_dict_and_timm_safetensors(tmp_path):
    """``model.features.state_dict()`` (keys ``0.0.weight``, ...) and a timm num_classes=0
    safetensors file convert too."""
    tensors = read_torch_state_dict(FIXTURES / "torchvision_mobilenet_v2.pth")
    features = {k.removeprefix("features."): v for k, v in tensors.items() if k.startswith("features.")}
    result = convert(_torch_file(features, tmp_path / "features.pth"))
    assert (result.source, result.arch, result.model.graph.options.num_classes) == ("torchvision", "mobilenet_v2", 0)
    timm = {k: v for k, v in read_safetensors(FIXTURES / "timm_mobilenet_v4_conv_small.safetensors").items()
            if not k.startswith("classifier.")}
    save_file(timm, str(tmp_path / "timm.safetensors"))
    result = convert(tmp_path / "timm.safetensors")
    assert (result.source, result.model.graph.nodes[-1].out_shape) == ("timm", (1280,))


def test_a_headless_model_saves_loads_and_takes_a_new_head(tmp_path):
    model = convert(FIXTURES / "keras_mobilenet_v2_notop.h5").model
    save(model, tmp_path / "base.safetensors")
    loaded = load(tmp_path / "base.safetensors")
    x = np.load(FIXTURES / "expected_keras_mobilenet_v2_notop.npz")["x_64x64"]
    np.testing.assert_array_equal(loaded(x).data, model(x).data)
    tuned = replace_head(loaded, 3, seed=0)
    assert tuned.graph.options.num_classes == 3 and tuned.graph.nodes[-1].name == "Logits"
    tuned.eval()(x)
    np.testing.assert_array_equal(tuned.end_points["AvgPool"].data, model(x).data)


DETECTED = [  # (file, source, arch)
    ("keras_mobilenet_v1.h5", "keras", "mobilenet_v1"),
    ("keras_mobilenet_v2_keras3.h5", "keras", "mobilenet_v2"),
    ("keras_mobilenet_v3_large.h5", "keras", "mobilenet_v3_large"),
    ("keras_mobilenet_v3_small_minimalistic_keras3.h5", "keras", "mobilenet_v3_small_minimalistic"),
    ("torchvision_mobilenet_v3_large.pth", "torchvision", "mobilenet_v3_large"),
    ("timm_mobilenet_v4_conv_small.safetensors", "timm", "mobilenet_v4_conv_small"),
    ("tf_slim_mobilenet_v2/model.ckpt-1000", "tf-slim", "mobilenet_v2"),
]


@pytest.mark.parametrize("name, source, arch", DETECTED, ids=[d[0] for d in DETECTED])
def test_format_framework_and_architecture_are_detected(name, source, arch):
    result = convert(FIXTURES / name)
    assert (result.source, result.arch) == (source, arch)


@pytest.mark.parametrize("name, given, message", [
    ("keras_mobilenet_v1.h5", "torchvision", "looks like a Keras HDF5 file, not a torchvision file; use --from keras"),
    ("keras_mobilenet_v3_small.keras", "timm", "looks like a Keras .keras archive, not a timm file; use --from keras"),
    ("torchvision_mobilenet_v2.pth", "keras", "looks like a PyTorch .pth file, not a keras file; use --from torchvision or --from timm"),
    ("timm_mobilenet_v4_conv_small.pth", "torchvision", "looks like a timm state dict, not torchvision; use --from timm"),
    ("tf_slim_mobilenet_v1", "keras", "looks like a TensorFlow checkpoint, not a keras file; use --from tf-slim"),
])
def test_a_wrong_from_names_what_the_file_looks_like(name, given, message):
    with pytest.raises(ValueError, match=message):
        convert(FIXTURES / name, source=given)


def test_the_command_line_detects_everything_and_names_a_wrong_from(tmp_path):
    dst = tmp_path / "out.safetensors"
    result = _run("convert", str(FIXTURES / "keras_transfer_mobilenet_v2.keras"), str(dst))
    assert result.returncode == 0, result.stderr
    assert "keras mobilenet_v2, depth_multiplier 0.25, 5 classes" in result.stdout
    assert "applies softmax" in result.stdout
    assert load(dst).graph.options.num_classes == 5
    result = _run("convert", "--from", "torchvision", "--arch", "mobilenet_v2",
                  str(FIXTURES / "keras_mobilenet_v2.h5"), str(tmp_path / "x.safetensors"))
    assert result.returncode == 1
    assert result.stderr.strip().endswith("looks like a Keras HDF5 file, not a torchvision file; use --from keras")
    unknown = tmp_path / "notes.txt"
    unknown.write_text("not weights")
    result = _run("convert", str(unknown), str(tmp_path / "y.safetensors"))
    assert result.returncode == 1 and "not a weights file npmobilenet reads" in result.stderr


def test_a_model_file_is_not_taken_for_weights(tmp_path):
    model = convert(FIXTURES / "keras_mobilenet_v1.h5").model
    save(model, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="already an npmobilenet model file"):
        convert(tmp_path / "model.safetensors")

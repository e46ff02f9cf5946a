"""Converted ImageNet heads carry their class names in the model file, so ``predict`` names
them with no side files: 1000 classes get ImageNet's names, 1001 (TF-slim) ``background``
first; other heads get none (their names are unknown)."""

import json

import numpy as np
import pytest

from npmobilenet import load, save
from npmobilenet.cli import main
from npmobilenet.io import convert_state, imagenet_classes, read_torch_state_dict

from .conftest import FIXTURES


def _with_head(classes: int) -> dict:
    tensors = dict(read_torch_state_dict(FIXTURES / "torchvision_mobilenet_v2.pth"))
    rng = np.random.default_rng(0)
    tensors["classifier.1.weight"] = rng.standard_normal((classes, 1280)).astype(np.float32) * 0.01
    tensors["classifier.1.bias"] = np.zeros(classes, np.float32)
    return tensors


@pytest.mark.parametrize("classes", [1000, 1001])
def test_imagenet_heads_store_the_imagenet_names(tmp_path, classes):
    model = convert_state("torchvision", "mobilenet_v2", _with_head(classes))
    expected = imagenet_classes() if classes == 1000 else ["background", *imagenet_classes()]
    assert model.class_names == expected
    save(model, tmp_path / "m.safetensors")
    assert load(tmp_path / "m.safetensors").class_names == expected


def test_other_heads_store_no_names():
    assert convert_state("torchvision", "mobilenet_v2", _with_head(10)).class_names is None


def test_predict_names_an_imagenet_model_from_the_file_alone(tmp_path, capsys):
    from PIL import Image

    model = convert_state("torchvision", "mobilenet_v2", _with_head(1000))
    save(model, tmp_path / "m.safetensors")
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)).save(image)
    assert main(["predict", "--weights", str(tmp_path / "m.safetensors"), str(image), "--topk", "1",
                 "--format", "json"]) == 0
    top = json.loads(capsys.readouterr().out)["predictions"][0]
    assert top["label"] == imagenet_classes()[top["index"]]

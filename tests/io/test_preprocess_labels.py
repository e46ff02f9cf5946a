"""Preprocessing presets and class names."""

import numpy as np
import pytest
from PIL import Image

from npmobilenet.io import class_names, imagenet_classes, load_image, preset
from npmobilenet.io.preprocess import preprocess_image, validate_preset


def _pixels(h, w):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["torchvision", "keras"])
def test_crop_and_normalise_match_a_hand_computation(name):
    pixels = _pixels(256, 300)  # shorter side already 256: no resampling
    p = preset(name)
    x = preprocess_image(Image.fromarray(pixels), p)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    crop = pixels[16:240, 38:262].astype(np.float64) / 255
    expected = (crop - np.array(p["mean"])) / np.array(p["std"])
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-5)


def test_keras_scaling_is_minus_one_to_one():
    x = preprocess_image(Image.fromarray(np.full((224, 224, 3), 255, np.uint8)), preset("keras"))
    np.testing.assert_allclose(x, 1.0, atol=1e-6)
    x = preprocess_image(Image.fromarray(np.zeros((224, 224, 3), np.uint8)), preset("keras"))
    np.testing.assert_allclose(x, -1.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    image = Image.fromarray(_pixels(120, 90)).convert(mode)
    path = tmp_path / ("img.tiff" if mode in ("CMYK", "I;16") else "img.png")
    image.save(path)
    x = load_image(path, preset("torchvision"), np.float64)
    assert x.shape == (224, 224, 3) and x.dtype == np.float64


def test_resize_keeps_the_aspect_ratio():
    pixels = np.zeros((100, 400, 3), np.uint8)
    pixels[:, 200:] = 255  # right half white: after resize to 256x1024 and centre crop, half/half
    x = preprocess_image(Image.fromarray(pixels), preset("keras"))
    assert x[:, :100].max() < -0.99 and x[:, 124:].min() > 0.99


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg: cannot decode"):
        load_image(bad, preset("keras"))


def test_preset_validation():
    with pytest.raises(ValueError, match="preprocess.crop"):
        validate_preset({**preset("keras"), "crop": 0})
    with pytest.raises(ValueError, match="preprocess.std"):
        validate_preset({**preset("keras"), "std": [1, 2]})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("caffe")


def test_class_names(tmp_path):
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0] == "tench" and names[999] == "toilet tissue"
    with_background = class_names(1001)
    assert with_background[0] == "background" and with_background[1] == "tench"
    assert class_names(1000) == names
    assert class_names(3) == ["class 0", "class 1", "class 2"]
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\n\ndog\n")
    assert class_names(2, labels) == ["cat", "dog"]
    with pytest.raises(ValueError, match="has 2 names, the model 3 classes"):
        class_names(3, labels)

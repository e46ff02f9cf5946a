"""Preprocessing presets (each equal to its framework's own pipeline) and class names."""

import numpy as np
import pytest
from PIL import Image

from npmobilenet.io import class_names, imagenet_classes, load_image, preset
from npmobilenet.io.preprocess import open_image, preprocess_image, validate_preset

from .conftest import FIXTURES

PHOTOS = ("photo_333x251", "photo_251x389")


def _pixels(h, w):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("name", ["torchvision", "keras", "slim"])
def test_each_preset_equals_its_frameworks_pipeline(name, photo):
    """The fixtures were made by the frameworks themselves on the same Pillow-decoded photos
    (scripts/make_fixtures.py --only preprocess): torchvision's Resize(256) + CenterCrop(224) +
    ToTensor + Normalize, Keras' load_img(target_size=(224, 224)) + img_to_array +
    preprocess_input, TF-slim's preprocess_for_eval."""
    expected = np.load(FIXTURES / "expected_preprocess.npz")[f"{name}_{photo}"]
    x = load_image(FIXTURES / f"{photo}.jpg", preset(name))
    assert x.shape == expected.shape == (224, 224, 3) and x.dtype == np.float32
    assert np.abs(x - expected).max() <= 1e-6


def test_torchvision_truncates_the_long_side_and_rounds_the_crop_offset():
    """A 333x251 photo resizes to 339x256 (int(256 * 333 / 251) = 339, not round's 340) and is
    cropped at int(round(115 / 2.0)) = 58 (round half to even), as torchvision does."""
    image = open_image(FIXTURES / "photo_333x251.jpg")
    x = preprocess_image(image, preset("torchvision"))
    resized = np.asarray(image.resize((339, 256), Image.Resampling.BILINEAR))
    p = preset("torchvision")
    expected = (resized[16:240, 58:282] / np.float32(255) - np.float32(p["mean"])) / np.float32(p["std"])
    np.testing.assert_array_equal(x, expected.astype(np.float32))


def test_torchvision_crop_and_normalise_match_a_hand_computation():
    pixels = _pixels(256, 300)  # shorter side already 256: no resampling
    p = preset("torchvision")
    x = preprocess_image(Image.fromarray(pixels), p)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    crop = pixels[16:240, 38:262].astype(np.float64) / 255
    expected = (crop - np.array(p["mean"])) / np.array(p["std"])
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-5)


def test_keras_is_load_img_nearest_then_x_over_127_5_minus_1():
    x = preprocess_image(Image.fromarray(np.full((224, 224, 3), 255, np.uint8)), preset("keras"))
    np.testing.assert_allclose(x, 1.0, atol=1e-6)
    pixels = _pixels(224, 224)  # Keras' x / 127.5 - 1 in float32, bit for bit
    x = preprocess_image(Image.fromarray(pixels), preset("keras"))
    np.testing.assert_array_equal(x, pixels.astype(np.float32) / np.float32(127.5) - np.float32(1))
    wide = np.zeros((100, 400, 3), np.uint8)
    wide[:, 200:] = 255  # the whole image is squashed to 224x224: the halves stay halves
    x = preprocess_image(Image.fromarray(wide), preset("keras"))
    assert x[:, :112].max() == -1.0 and x[:, 112:].min() == 1.0


def test_slim_takes_the_central_87_5_percent():
    pixels = np.zeros((256, 256, 3), np.uint8)
    pixels[16:240, 16:240] = 255  # exactly the central 224x224: resized 224 -> 224 unchanged
    x = preprocess_image(Image.fromarray(pixels), preset("slim"))
    np.testing.assert_array_equal(x, np.ones((224, 224, 3), np.float32))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    image = Image.fromarray(_pixels(120, 90)).convert(mode)
    path = tmp_path / ("img.tiff" if mode in ("CMYK", "I;16") else "img.png")
    image.save(path)
    for name in ("torchvision", "keras", "slim"):
        x = load_image(path, preset(name), np.float64)
        assert x.shape == (224, 224, 3) and x.dtype == np.float64


def test_resize_keeps_the_aspect_ratio():
    pixels = np.zeros((100, 400, 3), np.uint8)
    pixels[:, 200:] = 255  # right half white: after resize to 256x1024 and centre crop, half/half
    x = preprocess_image(Image.fromarray(pixels), {**preset("torchvision"), "mean": [0.5] * 3,
                                                    "std": [0.5] * 3})
    assert x[:, :100].max() < -0.99 and x[:, 124:].min() > 0.99


def test_a_preset_without_mode_is_resize_then_crop():
    old = {key: value for key, value in preset("torchvision").items() if key != "mode"}
    image = open_image(FIXTURES / "photo_251x389.jpg")
    np.testing.assert_array_equal(preprocess_image(image, validate_preset(old)),
                                  preprocess_image(image, preset("torchvision")))


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
    with pytest.raises(ValueError, match="preprocess.mode"):
        validate_preset({**preset("keras"), "mode": "bicubic"})
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

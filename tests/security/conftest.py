"""Shared fixtures of the security tests."""

import numpy as np
import pytest
from PIL import Image

import npmobilenet as nm


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small v1 model file with a preprocessing preset, and a photo to predict."""
    model = nm.build_model("mobilenet_v1", depth_multiplier=0.25, input_size=32, num_classes=3,
                           seed=0).eval()
    model.preprocess = {"name": "test", "resize": 36, "crop": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    nm.save(model, path)
    image = path.parent / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)).save(image)
    return path, image

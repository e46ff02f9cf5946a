"""A small 10-class model file and a few hundred generated images (PNG and JPEG, nested folders,
one class folder per label c0..c2) with one corrupt file, shared by the batch-inference tests."""

import json

import numpy as np
import pytest
from PIL import Image

import npmobilenet as nm
from npmobilenet.cli import main
from npmobilenet.data import ArrayImages, EvalTransform, Loader
from npmobilenet.train import recalibrate_batch_norm

PRESET = {"name": "test", "resize": 32, "crop": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
IMAGES = 240
CORRUPT = "c1/broken.jpg"


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """MobileNet v1 x0.25 at 32 pixels, its batch-norm statistics recomputed on colourful images
    so that each image gets its own probabilities and features (at initialisation they are
    nearly equal for every image)."""
    model = nm.build_model("mobilenet_v1", depth_multiplier=0.25, input_size=32, num_classes=10, seed=0)
    pixels = np.stack([_pixels(np.random.default_rng(i), 32, 32) for i in range(64)])
    recalibrate_batch_norm(model, Loader(ArrayImages(pixels, np.zeros(64, int), {"any": 0}),
                                         EvalTransform(PRESET), 64))
    model.preprocess = PRESET
    model.class_names = [f"c{i}" for i in range(10)]
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    nm.save(model, path)
    return path


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """``root/c{label}/[sub/]NNN.{png,jpg}``: IMAGES random images of varied sizes, plus one
    file that is not an image."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        folder = root / f"c{i % 3}" / ("sub" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_pixels(rng, rng.integers(30, 48), rng.integers(30, 48))).save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    (root / CORRUPT).write_bytes(b"\xff\xd8 this is not a JPEG")
    return root


def _pixels(rng, height, width) -> np.ndarray:
    """A noisy image of one random colour, uint8 (height, width, 3)."""
    noisy = rng.integers(0, 256, 3) + rng.normal(0, 40, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def run(capsys, *args) -> tuple[int, str, str]:
    """``npmobilenet ARGS`` in this process: exit code, stdout, stderr."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_same_predictions(got: list[dict], expected: list[dict], tolerance: float) -> None:
    """predict's JSON records: the same paths in the same order, the same classes and errors,
    probabilities within ``tolerance``."""
    assert [r["path"] for r in got] == [r["path"] for r in expected]
    for a, b in zip(got, expected):
        assert a.get("error") == b.get("error")
        ranked_a, ranked_b = a.get("predictions", []), b.get("predictions", [])
        assert [(p["index"], p["label"]) for p in ranked_a] == [(p["index"], p["label"]) for p in ranked_b]
        np.testing.assert_allclose([p["probability"] for p in ranked_a],
                                   [p["probability"] for p in ranked_b], rtol=0, atol=tolerance)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]

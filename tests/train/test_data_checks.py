"""Data a classifier cannot learn from is refused saying why, before any training; a lone last
sample never makes a batch of one (batch norm cannot train on it)."""

import numpy as np
import pytest
from PIL import Image

from npmobilenet.cli import main
from npmobilenet.data import ArrayImages, EvalTransform, Loader

PRESET = {"name": "test", "resize": 8, "crop": 8, "mean": [0.5] * 3, "std": [0.5] * 3}


def image_folder(root, counts: dict[str, int]):
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(root / name / f"{i}.png")
    return root


def train_error(capsys, data, *flags) -> str:
    assert main(["train", "--data", str(data), "--out", str(data.parent / "out"), *flags]) == 1
    assert not (data.parent / "out").exists()
    return capsys.readouterr().err.strip()


def test_one_class_folder_is_refused_saying_so(capsys, tmp_path):
    data = image_folder(tmp_path / "data", {"cat": 3})
    assert train_error(capsys, data) == (f"npmobilenet: error: {data}: only one class folder (cat); "
                                         f"training a classifier needs at least two")


def test_one_image_per_class_with_a_validation_split_is_refused_saying_so(capsys, tmp_path):
    data = image_folder(tmp_path / "data", {"cat": 1, "dog": 1, "emu": 3})
    assert train_error(capsys, data) == (
        f"npmobilenet: error: {data}: classes ['cat', 'dog'] have only one image; holding out a "
        f"validation split needs at least two per class (one to train on, one to validate), or give "
        f"a --val folder")


def test_an_empty_class_folder_is_refused_saying_so(capsys, tmp_path):
    data = image_folder(tmp_path / "data", {"cat": 2, "dog": 0})
    assert train_error(capsys, data) == (f"npmobilenet: error: {data}: class folders ['dog'] hold no "
                                         f"images; every class needs images to train on")


@pytest.mark.parametrize("count, batch, sizes", [(9, 8, [9]), (17, 8, [8, 9]), (16, 8, [8, 8]),
                                                 (1, 8, [1]), (10, 8, [8, 2])])
def test_a_lone_last_sample_joins_the_batch_before_it(count, batch, sizes):
    data = ArrayImages(np.zeros((count, 8, 8, 3), np.uint8), np.arange(count) % 2, {"a": 0, "b": 1})
    loader = Loader(data, EvalTransform(PRESET), batch, shuffle=True)
    assert [len(y) for _, y in loader.epoch(0)] == sizes
    assert len(loader) == len(sizes)

"""``npmobilenet train``'s flags for what used to be fixed: batch-norm momentum, optimizer
options (refused where they do not apply), and augmentation with defaults that keep a tiny
image whole at evaluation and never crop it to a sliver."""

import argparse

import pytest
from PIL import Image

from npmobilenet import load
from npmobilenet.cli import main
from npmobilenet.cli.train import _augmentation


def _folder(root):
    for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (32, 32), tuple(c + 8 * i for c in colour)).save(root / name / f"{i}.png")
    return root


def _args(**given):
    flags = {"crop_scale": None, "flip": None, "resize_ratio": None, **given}
    return argparse.Namespace(**flags)


def test_tiny_images_are_cropped_gently_and_evaluated_whole():
    assert _augmentation(_args(), "folder", 32) == {"crop_scale": 0.5, "flip": True, "resize_ratio": 1.0}
    assert _augmentation(_args(), "cifar10", 32) == {"crop_scale": 0.5, "flip": True, "resize_ratio": 1.0}
    assert _augmentation(_args(), "folder", 224) == {"crop_scale": 0.08, "flip": True, "resize_ratio": 256 / 224}
    assert _augmentation(_args(), "digits", 48) == {"crop_scale": 0.7, "flip": False, "resize_ratio": 1.0}
    given = _augmentation(_args(crop_scale=1.0, flip=False, resize_ratio=1.25), "folder", 32)
    assert given == {"crop_scale": 1.0, "flip": False, "resize_ratio": 1.25}


def test_the_momentum_and_resize_ratio_given_are_the_trained_model_s(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--spec", "mobilenet_v1",
                 "--depth-multiplier", "0.25", "--input-size", "32", "--epochs", "1", "--batch-size", "4",
                 "--bn-momentum", "0.05", "--resize-ratio", "1.25", "--no-flip", "--quiet",
                 "--export-samples", "0"]) == 0
    assert "batch-norm momentum 0.05" in capsys.readouterr().out
    model = load(out / "best.safetensors")
    assert model.graph.options.bn_momentum == 0.05
    assert (model.preprocess["resize"], model.preprocess["crop"]) == (40, 32)
    # Fine-tuning that file keeps its momentum unless told otherwise.
    again = tmp_path / "again"
    assert main(["train", "--data", str(data), "--out", str(again), "--weights", str(out / "best.safetensors"),
                 "--input-size", "32", "--epochs", "1", "--batch-size", "4", "--bn-momentum", "0.2",
                 "--quiet", "--export-samples", "0"]) == 0
    capsys.readouterr()
    tuned = load(again / "best.safetensors")
    assert tuned.graph.options.bn_momentum == 0.2 and tuned.preprocess["resize"] == 32


@pytest.mark.parametrize("flags, message", [
    (["--rho", "0.9"], "rho: applies to rmsprop, not sgd"),
    (["--optimizer", "sgd", "--eps", "1e-3"], "eps: applies to rmsprop and adam, not sgd"),
    (["--optimizer", "adam", "--rmsprop-start", "keras"], "rmsprop_start: applies to rmsprop, not adam"),
    (["--bn-momentum", "0"], "argument --bn-momentum: expected a number in (0, 1], got 0.0"),
    (["--crop-scale", "0"], "argument --crop-scale: expected a number in (0, 1], got 0.0"),
    (["--resize-ratio", "0.5"], "argument --resize-ratio: expected a number in [1, 8], got 0.5"),
    (["--rmsprop-start", "torch"], "argument --rmsprop-start: invalid choice: 'torch' (choose from 'keras', 'tf')"),
])
def test_flags_that_do_not_apply_are_usage_errors(capsys, tmp_path, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "builtin:digits", "--out", str(tmp_path / "o"), *flags])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"npmobilenet train: error: {message}"


def test_cifar10_validates_on_its_test_batch_only(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "cifar10:anywhere", "--out", str(tmp_path / "o"), "--val-split", "0.1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith(
        "--val and --val-split do not apply to cifar10: it validates on its test batch")

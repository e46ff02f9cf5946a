"""Keras's CIFAR-10 recipe through the command line, on the small CIFAR-format fixture
(scripts/make_cifar_fixtures.py): MobileNet v1 at 32x32, RMSProp lr 0.045, rho 0.9, eps 1.0 from
a zero accumulator (Keras's start), x0.94 every 2 epochs, batch 64. It trains from the binary
layout, and the Python layout of the same data scores the saved model as training did."""

import json
from pathlib import Path

from npmobilenet import load
from npmobilenet.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "cifar10"
RECIPE = ["--spec", "mobilenet_v1", "--input-size", "32", "--optimizer", "rmsprop", "--lr", "0.045",
          "--rho", "0.9", "--eps", "1.0", "--rmsprop-start", "keras", "--momentum", "0",
          "--schedule", "exponential", "--batch-size", "64"]


def test_the_keras_cifar10_recipe_runs_and_learns(capsys, tmp_path):
    out = tmp_path / "run"
    # 300 training images make 5 steps an epoch: the batch-norm statistics need ~50 steps to
    # follow the weights (a real CIFAR-10 epoch is 782 steps).
    code = main(["train", "--data", f"cifar10:{FIXTURE / 'cifar-10-batches-bin'}", "--out", str(out),
                 *RECIPE, "--epochs", "12", "--quiet", "--export-samples", "10"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "on 300 images, validating on 100; rmsprop lr 0.045, batch 64" in stdout
    rows = json.loads((out / "metrics.json").read_text())
    assert rows[-1]["train_loss"] < 0.6 * rows[0]["train_loss"]
    assert rows[-1]["lr"] == 0.045 * 0.94 ** 5  # steps of 2 epochs: 5 decays before epoch 12's last step
    best = max(row["val_top1"] for row in rows)
    assert best >= 0.4  # 10 classes: chance is 0.1
    model = load(out / "best.safetensors")
    assert model.class_names[:3] == ["airplane", "automobile", "bird"]  # from batches.meta.txt
    assert model.preprocess["resize"] == model.preprocess["crop"] == 32  # tiny: no border cut

    code = main(["evaluate", "--weights", str(out / "best.safetensors"), "--data",
                 f"cifar10:{FIXTURE / 'cifar-10-batches-py'}", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["images"] == 100 and metrics["top1"] == best and metrics["top5"] is not None

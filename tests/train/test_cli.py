"""The quickstart end to end through the console script: train on built-in digits (shortened),
then predict a held-out digit and evaluate."""

import subprocess
import sys

import pytest


def npmobilenet(*args):
    return subprocess.run([sys.executable, "-m", "npmobilenet.cli", *args], capture_output=True,
                          text=True, timeout=600)


def _predicted_right(out):
    """Predict the held-out samples a run exported; (how many were named right, how many)."""
    samples = sorted((out / "samples").glob("*.png"))
    result = npmobilenet("predict", "--weights", str(out / "best.safetensors"), "--labels",
                         str(out / "labels.txt"), "--topk", "1", *map(str, samples))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    right = sum(f"  {sample.stem.rsplit('_', 1)[1]} (" in lines[2 * i + 1]
                for i, sample in enumerate(samples))
    return right, len(samples)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    result = npmobilenet("train", "--data", "builtin:digits", "--out", str(out), "--epochs", "4",
                         "--input-size", "32", "--quiet")
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_train_reports_progress_and_writes_its_files(trained):
    out, stdout = trained
    assert "epoch 4/4" in stdout and "best validation accuracy" in stdout
    for name in ("best.safetensors", "last.safetensors", "metrics.csv", "metrics.json",
                 "class_indices.json", "labels.txt"):
        assert (out / name).exists(), name
    accuracy = float(stdout.split("best validation accuracy ")[1].split(";")[0])
    assert accuracy > 0.8  # 4 short epochs; the full quickstart reaches >= 0.97


def test_predict_names_the_held_out_digits(trained):
    out, _ = trained
    right, samples = _predicted_right(out)
    assert right >= samples - 2  # 10 digits, one per class; ~94% after 4 epochs


def test_evaluate_prints_accuracy_and_confusion(trained):
    out, _ = trained
    result = npmobilenet("evaluate", "--weights", str(out / "best.safetensors"), "--data", "builtin:digits")
    assert result.returncode == 0, result.stderr
    assert "1797 images: top-1" in result.stdout and "confusion matrix" in result.stdout
    # The held-out part alone scores what training reported for its best epoch.
    heldout = npmobilenet("evaluate", "--weights", str(out / "best.safetensors"), "--data", "builtin:digits",
                          "--val-split", "0.2", "--seed", "0")
    assert heldout.returncode == 0, heldout.stderr
    best = trained[1].split("best validation accuracy ")[1].split(";")[0]
    assert heldout.stdout.startswith(f"359 images: top-1 {best},"), (heldout.stdout, best)


def test_bad_data_folder_is_one_clear_line(tmp_path):
    result = npmobilenet("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"npmobilenet: error: no such data folder: {tmp_path / 'missing'}"


def test_fine_tuning_on_the_same_classes_keeps_the_trained_head(trained, tmp_path):
    out, stdout = trained
    before = float(stdout.split("best validation accuracy ")[1].split(";")[0])
    # A vanishing learning rate: the kept head scores as before, a fresh one would be at chance.
    result = npmobilenet("train", "--data", "builtin:digits", "--out", str(tmp_path), "--weights",
                         str(out / "best.safetensors"), "--freeze-backbone", "--cache-features",
                         "--epochs", "1", "--lr", "1e-9", "--input-size", "32", "--quiet", "--export-samples", "0")
    assert result.returncode == 0, result.stderr
    after = float(result.stdout.split("best validation accuracy ")[1].split(";")[0])
    assert after == pytest.approx(before, abs=1 / 359)


def test_train_and_predict_a_mobilenet_v3(tmp_path):
    out = tmp_path / "v3"
    result = npmobilenet("train", "--data", "builtin:digits", "--spec", "mobilenet_v3_small",
                         "--out", str(out), "--epochs", "3", "--input-size", "32", "--quiet")
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("best validation accuracy ")[1].split(";")[0])
    assert accuracy > 0.8  # 0.94 seen after 3 epochs
    right, samples = _predicted_right(out)
    assert right >= samples - 3

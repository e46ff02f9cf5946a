"""``predict`` and ``evaluate`` for scripts: names from the model file alone, folders, globs and
@lists, JSON and CSV records, top-k capped at the classes, evaluate agreeing exactly with
predict's records on a folder lacking a class, a clean exit on a closed pipe, and defaults in
every subcommand's ``--help``."""

import csv
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from npmobilenet import build_model
from npmobilenet.cli import build_parser, main
from npmobilenet.cli.arguments import HelpFormatter
from npmobilenet.data import EvalTransform, ImageFolder, Loader, digits
from npmobilenet.train import TrainConfig, Trainer

SIZE = 32
PRESET = {"name": "test", "resize": SIZE, "crop": SIZE, "mean": [0.5] * 3, "std": [0.5] * 3}
NAMES = ["zero", "one", "two", "three"]
MODEL_NAMES = sorted(NAMES)  # the class folders' order, as training gives them


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """200 handwritten digits 0-3 (50 each) as PNGs in class folders, 40x40."""
    root = tmp_path_factory.mktemp("images") / "digits"
    data = digits(40)
    for label, name in enumerate(NAMES):
        (root / name).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(data.labels() == label)[:50]):
            Image.fromarray(data.images[index]).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def model_file(folder, tmp_path_factory):
    """A briefly trained 4-class model, copied alone into a folder: no labels.txt, no
    class_indices.json beside it; its names are only in the file."""
    runs = tmp_path_factory.mktemp("run")
    model = build_model("mobilenet_v1", depth_multiplier=0.25, input_size=SIZE, num_classes=4, seed=0)
    model.preprocess = PRESET
    data = ImageFolder(folder)
    model.class_names = sorted(data.class_indices, key=data.class_indices.get)
    loader = Loader(data, EvalTransform(PRESET), 16, shuffle=True)
    Trainer(model, loader, Loader(data, EvalTransform(PRESET), 64), runs / "out",
            TrainConfig(epochs=4, lr=0.05), progress=False, report=False).fit()
    alone = tmp_path_factory.mktemp("alone") / "model.safetensors"
    shutil.copy(runs / "out" / "best.safetensors", alone)
    return alone


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_json_gives_one_named_record_per_image(capsys, folder, model_file):
    code, out, err = run(capsys, "predict", "--weights", model_file, folder, "--format", "json",
                         "--batch-size", "64")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    expected = sorted(str(p) for p in folder.rglob("*.png"))
    assert [r["path"] for r in records] == expected and len(records) == 200
    for record in records:
        assert set(record) == {"path", "predictions"}
        predictions = record["predictions"]
        assert len(predictions) == 4  # --topk 5 capped at the model's 4 classes
        assert {p["label"] for p in predictions} == set(NAMES)  # the model file's own names
        assert all(MODEL_NAMES[p["index"]] == p["label"] for p in predictions)
        probabilities = [p["probability"] for p in predictions]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1, abs=1e-4)
    right = sum(r["predictions"][0]["label"] == r["path"].split("/")[-2] for r in records)
    assert right > 100  # trained, not chance (50)


def test_evaluate_on_a_folder_lacking_a_class_agrees_with_predict(capsys, folder, model_file, tmp_path):
    subset = tmp_path / "three"
    for name in ("zero", "two", "three"):  # no "one"
        shutil.copytree(folder / name, subset / name)
    code, out, err = run(capsys, "predict", "--weights", model_file, subset, "--format", "json", "--topk", "1")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    right = sum(r["predictions"][0]["label"] == r["path"].split("/")[-2] for r in records)
    code, out, err = run(capsys, "evaluate", "--weights", model_file, "--data", subset, "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["images"] == len(records) == 150
    assert metrics["top1"] == right / 150
    assert metrics["top5"] is None  # 4 classes: every label is in the top five
    assert metrics["per_class"][MODEL_NAMES.index("one")] is None  # no images
    confusion = np.array(metrics["confusion"])
    assert confusion.sum(axis=1).tolist() == [0, 50, 50, 50]  # one, three, two, zero
    code, out, err = run(capsys, "evaluate", "--weights", model_file, "--data", subset)
    assert code == 0, err
    assert f"150 images: top-1 {right / 150:.4f}, top-5 n/a (5 classes or fewer)" in out
    assert "one  no images" in out


def test_predict_takes_files_globs_lists_and_reports_unreadable_ones(capsys, folder, model_file, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    listed = tmp_path / "list.txt"
    listed.write_text(f"{folder / 'one' / '00.png'}\n\n{tmp_path / 'missing.png'}\n")
    pattern = str(folder / "t*" / "0[01].png")
    code, out, err = run(capsys, "predict", "--weights", model_file, "--format", "csv", "--topk", "2",
                         tmp_path / "broken.png", f"@{listed}", pattern, str(tmp_path / "*.jpeg"))
    assert code == 1
    assert err.strip() == "npmobilenet: error: 3 of 8 inputs could not be predicted (see their error records)"
    rows = list(csv.DictReader(io.StringIO(out)))
    paths = [row["path"] for row in rows if row["rank"] in ("", "1")]
    assert paths == [str(tmp_path / "broken.png"), str(folder / "one" / "00.png"), str(tmp_path / "missing.png"),
                     *(str(folder / c / f"0{i}.png") for c in ("three", "two") for i in (0, 1)),
                     str(tmp_path / "*.jpeg")]
    errors = {row["path"]: row["error"] for row in rows if row["error"]}
    assert errors[str(tmp_path / "broken.png")].startswith(f"{tmp_path / 'broken.png'}: cannot decode image")
    assert errors[str(tmp_path / "missing.png")] == f"{tmp_path / 'missing.png'}: no such file"
    assert errors[str(tmp_path / "*.jpeg")] == f"{tmp_path / '*.jpeg'}: no file matches the pattern"
    assert [row["rank"] for row in rows if row["path"] == str(folder / "one" / "00.png")] == ["1", "2"]
    # text, the default: ranked lines per image, errors on stderr
    code, out, err = run(capsys, "predict", "--weights", model_file, folder / "two" / "03.png", "--topk", "9")
    assert code == 0 and out.splitlines()[0] == str(folder / "two" / "03.png") and len(out.splitlines()) == 5


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_closed_pipe_ends_quietly(folder, model_file, command):
    args = [model_file, folder] if command == "predict" else [model_file, "--data", folder]
    flag = ["--weights"]
    process = subprocess.Popen([sys.executable, "-m", "npmobilenet.cli", command, *flag, *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line (`| head -0`)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 141 and err == b""


def test_every_subcommand_shows_its_defaults():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) >= {"train", "evaluate", "predict", "convert", "summary"}
    for name, sub in commands.items():
        assert sub.formatter_class is HelpFormatter, name
    text = " ".join(commands["predict"].format_help().split())
    for shown in ("(default: 5)", "(default: text)", "(default: 32)", "(default: 2)"):
        assert shown in text
    assert "(default: None)" not in text

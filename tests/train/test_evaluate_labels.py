"""``evaluate`` scores against the model's own class names: never the data folder's sorted names
on trust. A model without names needs --labels; a class_indices.json beside it is checked; a class
folder the model does not know is refused, naming it."""

import json

import numpy as np
import pytest
from PIL import Image

import npmobilenet.cli.evaluate as evaluate_command
from npmobilenet import build_model, load, save
from npmobilenet.cli import main
from npmobilenet.data import digits

SIZE = 32
PRESET = {"name": "test", "resize": SIZE, "crop": SIZE, "mean": [0.5] * 3, "std": [0.5] * 3}
NAMES = ["five", "six", "seven"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two handwritten fives, sixes and sevens in class folders."""
    root = tmp_path_factory.mktemp("digits")
    data = digits(40)
    for label, name in zip((5, 6, 7), NAMES):
        (root / name).mkdir()
        for i, index in enumerate(np.flatnonzero(data.labels() == label)[:2]):
            Image.fromarray(data.images[index]).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def weights(tmp_path):
    """A model file with no class names stored and nothing beside it."""
    model = build_model("mobilenet_v1", depth_multiplier=0.25, input_size=SIZE, num_classes=3,
                        global_pool=True, seed=0)
    model.preprocess = PRESET
    path = tmp_path / "model" / "model.safetensors"
    path.parent.mkdir()
    save(model, path)
    return path


def evaluate(capsys, *args) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err.strip()


def test_a_model_without_class_names_is_refused_unless_labels_are_given(capsys, weights, folder, tmp_path):
    code, _, err = evaluate(capsys, "--weights", weights, "--data", folder)
    assert code == 1
    assert err == (f"npmobilenet: error: {weights}: the model file stores no class names, so its outputs "
                   f"cannot be matched to class folders; give them with --labels FILE (one a line, in "
                   f"index order)")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n")
    code, out, err = evaluate(capsys, "--weights", weights, "--data", folder, "--labels", labels)
    assert code == 0, err
    assert out.startswith("6 images: top-1")


def loading_with_names(names):
    """``load`` as if the model file stored ``names``."""
    def load_with_names(path):
        model = load(path)
        model.class_names = names
        return model
    return load_with_names


def test_the_model_s_stored_names_decide_the_labels(capsys, weights, folder, monkeypatch):
    monkeypatch.setattr(evaluate_command, "load", loading_with_names(["seven", "six", "five"]))
    code, out, err = evaluate(capsys, "--weights", weights, "--data", folder, "--json")
    assert code == 0, err
    confusion = np.array(json.loads(out)["confusion"])
    assert confusion.sum(axis=1).tolist() == [2, 2, 2]  # every index has its two images
    monkeypatch.setattr(evaluate_command, "load", loading_with_names(["five", "six", "eight"]))
    code, _, err = evaluate(capsys, "--weights", weights, "--data", folder)
    assert code == 1
    assert err.startswith(f"npmobilenet: error: {folder}: class folders ['seven'] are not among the "
                          f"model's classes")


@pytest.mark.parametrize("content, message", [
    ({"five": 0, "six": 0, "seven": 2}, "index 0 is given to both 'five' and 'six'"),
    ({"five": 0, "six": 1, "seven": 3}, "index of 'seven': expected an integer in [0, 2], got 3"),
    ({"five": 0, "six": 1, "seven": "2"}, "index of 'seven': expected an integer, got \"2\""),
    ({"five": 0, "six": 1}, "no class name for indices [2] of the model's 3 classes"),
    (NAMES, "expected an object {class name: index}, got [\"five\", \"six\", \"seven\"]"),
])
def test_class_indices_beside_the_weights_are_checked(capsys, weights, folder, content, message):
    beside = weights.parent / "class_indices.json"
    beside.write_text(json.dumps(content))
    code, _, err = evaluate(capsys, "--weights", weights, "--data", folder)
    assert code == 1
    assert err == f"npmobilenet: error: {beside}: {message}"


def test_class_indices_beside_the_weights_give_the_labels(capsys, weights, folder):
    (weights.parent / "class_indices.json").write_text(json.dumps({"seven": 0, "six": 1, "five": 2}))
    code, out, err = evaluate(capsys, "--weights", weights, "--data", folder)
    assert code == 0, err
    assert "per-class accuracy" in out


def test_a_class_folder_the_model_does_not_know_is_refused(capsys, weights, folder, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("five\nsix\neight\n")
    code, _, err = evaluate(capsys, "--weights", weights, "--data", folder, "--labels", labels)
    assert code == 1
    assert err == (f"npmobilenet: error: {folder}: class folders ['seven'] are not among the model's "
                   f"classes [\"eight\", \"five\", \"six\"]")
    labels.write_text("five\nsix\nsix\n")
    code, _, err = evaluate(capsys, "--weights", weights, "--data", folder, "--labels", labels)
    assert code == 1
    assert err == f"npmobilenet: error: {labels}: class names ['six'] appear more than once"
    code, _, err = evaluate(capsys, "--weights", weights, "--data", "builtin:digits", "--labels", labels)
    assert code == 1 and "appear more than once" in err

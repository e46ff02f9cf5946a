"""Specs, presets, images and batches from strangers: every number checked where it enters, every
refusal one line naming the problem, nothing allocated that the machine cannot hold."""

import json
import re

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

import npmobilenet as nm
from npmobilenet.io.preprocess import open_image
from npmobilenet.memory import InsufficientMemory
from npmobilenet.architecture import load_spec

from . import hostile_files as hostile
from .cli import assert_one_line_error, run_cli


def _v2_spec(**row_update) -> dict:
    spec = load_spec("mobilenet_v2")
    spec["body"][1].update(row_update)
    return spec


@pytest.mark.parametrize("spec, fragment", [
    (_v2_spec(n=10**9), "body[1].n: expected an integer in [1, 256], got 1000000000"),
    (_v2_spec(c=10**400), "body[1].c: expected an integer in [1, 65536], got 1000000"),
    (_v2_spec(t=100), "body[1].t: expected a number in (0, 64], got 100"),
    ({**load_spec("mobilenet_v1"), "defaults": {"depth_multiplier": 1e300}},
     "defaults.depth_multiplier: expected a number in (0, 64.0], got 1e+300"),
    ({**load_spec("mobilenet_v1"), "defaults": {"depth_multiplier": float("inf")}},
     "defaults.depth_multiplier: expected a finite number, got Infinity"),
    ({**load_spec("mobilenet_v1"), "body": load_spec("mobilenet_v1")["body"] * 400},
     "body: 5600 layers, more than the limit of 4096"),
])
def test_spec_numbers_are_ranged(tmp_path, spec, fragment):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert_one_line_error(run_cli("summary", path), fragment)


def test_deeply_nested_spec_is_refused(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"name": "x", "family": "v1", "body": ' + "[" * 200_000 + "]" * 200_000 + "}")
    assert_one_line_error(run_cli("summary", path), str(path), "nested")


def test_spec_asking_for_more_memory_than_available_is_refused_before_allocating(tmp_path):
    spec = {"name": "wide", "family": "v1",
            "body": [{"type": "Conv", "kernel": 1, "stride": 1, "depth": 65536}] * 8}
    path = tmp_path / "wide.json"
    path.write_text(json.dumps(spec))
    line = assert_one_line_error(run_cli("profile", path, "--input-size", "32"),
                                 "building wide's", "parameters needs about", "is available")
    assert re.search(r"needs about \d+\.\d GiB but only [\d.]+ [GM]iB is available", line), line


def test_batch_larger_than_memory_is_refused_before_running():
    model = nm.build_model("mobilenet_v1", depth_multiplier=0.25, input_size=64, num_classes=3)
    huge = np.broadcast_to(np.float32(0), (10**6, 224, 224, 3))  # no memory behind it
    with pytest.raises(InsufficientMemory, match=r"training pass over x of shape \(1000000, 224"):
        model(huge)


def test_builtin_spec_names_are_never_shadowed_by_a_local_file(tmp_path):
    (tmp_path / "mobilenet_v1").write_text("not a spec")
    builtin = run_cli("summary", "mobilenet_v1", "--json", cwd=tmp_path)
    assert builtin.returncode == 0, builtin.stderr
    assert json.loads(builtin.stdout)["total"]["params"] > 4_000_000
    assert_one_line_error(run_cli("summary", "./mobilenet_v1", cwd=tmp_path),
                          "./mobilenet_v1: invalid JSON")
    (tmp_path / "mobilenet_v9").write_text("{}")
    assert_one_line_error(run_cli("summary", "mobilenet_v9", cwd=tmp_path),
                          "unknown spec 'mobilenet_v9'", "write ./mobilenet_v9")


def test_dot_output_quotes_hostile_names(tmp_path):
    spec = load_spec("mobilenet_v1")
    spec["name"] = 'evil" [color=red];\n"injected" -> "x'
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(spec))
    result = run_cli("graph", path, "--format", "dot", "--input-size", "64")
    assert result.returncode == 0, result.stderr
    quoted = r'"(?:[^"\\]|\\.)*"'
    statement = re.compile(rf"  {quoted}( -> {quoted}| \[label={quoted}\]);")
    lines = result.stdout.splitlines()
    assert lines[0] == r'digraph "evil\" [color=red];\n\"injected\" -> \"x" {'
    body = lines[3:-1]
    assert body and all(statement.fullmatch(line) for line in body), body
    assert lines[-1] == "}"


# -- model files whose preprocessing is hostile ------------------------------------------------

def _with_preprocess(source, target, **update):
    with safe_open(source, framework="numpy") as handle:
        preprocess = json.loads(handle.metadata()["preprocess"])
    hostile.edited_model_file(source, target, {"preprocess": json.dumps({**preprocess, **update})})


@pytest.mark.parametrize("update, fragment", [
    ({"resize": 10**6, "crop": 10**6}, "preprocess.resize: expected an integer in [1, 8192]"),
    ({"std": [1e-300, 0.5, 0.5]}, "preprocess.std[0]: expected a number in [0.001, 100.0]"),
    ({"mean": [float("nan"), 0.5, 0.5]}, "preprocess.mean[0]: expected a finite number"),
])
def test_hostile_preprocessing_is_refused(model_file, tmp_path, update, fragment):
    source, image = model_file
    hostile_file = tmp_path / "hostile.safetensors"
    _with_preprocess(source, hostile_file, **update)
    result = run_cli("predict", "--weights", hostile_file, image)
    assert_one_line_error(result, str(hostile_file), fragment)
    assert result.stdout == ""


# -- images ------------------------------------------------------------------------------------

def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # blue on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    shown = np.asarray(open_image(path))
    assert shown.shape == (40, 20, 3)  # upright: taller than wide
    assert shown[5, 10, 2] > 200 and shown[35, 10, 0] > 200  # blue on top after the rotation


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    wide = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "scan.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode == "I;16"
    grey = np.asarray(open_image(path))[..., 0]
    np.testing.assert_array_equal(grey, np.round(wide / 257).astype(np.uint8))
    assert (grey == 255).mean() < 0.01  # clipping saturated 99% of these pixels


def test_decompression_bomb_in_predict_is_one_line_and_the_rest_still_predicted(model_file, tmp_path):
    source, image = model_file
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 10_000)).save(bomb)  # 200 megapixels in a few kilobytes
    result = run_cli("predict", "--weights", source, bomb, image)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines()
                                          if line.startswith("npmobilenet: error: ")]
    assert str(bomb) in result.stderr and "decompression bomb" in result.stderr
    assert result.stdout.splitlines()[0] == str(image)


# -- training on a poisoned batch --------------------------------------------------------------

def test_training_forward_refuses_non_finite_input_before_touching_statistics():
    model = nm.build_model("mobilenet_v1", depth_multiplier=0.25, input_size=32, num_classes=3)
    before = {name: value.copy() for name, value in model.named_buffers()}
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    x[2, 5, 7, 1] = np.nan
    with pytest.raises(ValueError, match="x: image 2 of the batch holds NaN or infinity"):
        model(x)
    for name, value in model.named_buffers():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    x[2, 5, 7, 1] = 0.5
    model(x)  # a clean batch trains, and moves the statistics
    assert any(not np.array_equal(value, before[name]) for name, value in model.named_buffers())

"""Model files: round trips, atomic writes, clear refusals."""

import json
import os

import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open

from npmobilenet.io import convert_file, load, save
from npmobilenet.model import build_model

from .conftest import FIXTURES


@pytest.fixture(scope="module")
def keras_v1():
    return convert_file("keras", "mobilenet_v1", FIXTURES / "keras_mobilenet_v1.h5")


def test_round_trip_keeps_weights_options_preprocessing_and_padding(tmp_path, keras_v1):
    path = tmp_path / "m.safetensors"
    save(keras_v1, path)
    loaded = load(path)
    assert not loaded.training
    assert loaded.dtype == np.float32
    assert loaded.graph.options == keras_v1.graph.options
    assert loaded.preprocess == keras_v1.preprocess
    assert loaded.graph.options.padding == "keras"
    original = keras_v1.state_dict()
    for name, value in loaded.state_dict().items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    x = np.load(FIXTURES / "expected_keras_mobilenet_v1.npz")["x_67x45"]  # odd: needs the variant
    np.testing.assert_array_equal(loaded(x).data, keras_v1(x).data)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left


def test_float64_and_no_preprocessing(tmp_path):
    model = build_model("mobilenet_v2", dtype=np.float64, seed=0, depth_multiplier=0.35,
                        num_classes=3, input_size=64)
    save(model, tmp_path / "m64.safetensors")
    loaded = load(tmp_path / "m64.safetensors")
    assert loaded.dtype == np.float64 and loaded.preprocess is None
    assert loaded.graph.options.input_size == (64, 64)
    for name, value in loaded.state_dict().items():
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value, model.state_dict()[name])


def test_interrupted_save_leaves_the_old_file(tmp_path, keras_v1, monkeypatch):
    path = tmp_path / "m.safetensors"
    save(keras_v1, path)
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save(keras_v1, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_truncated_and_foreign_files_are_refused(tmp_path, keras_v1):
    path = tmp_path / "m.safetensors"
    save(keras_v1, path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load(cut)
    foreign = tmp_path / "foreign.safetensors"
    safetensors.numpy.save_file({"a": np.zeros(2, np.float32)}, foreign)
    with pytest.raises(ValueError, match="not an npmobilenet model file"):
        load(foreign)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.safetensors")


def test_tensors_not_matching_the_spec(tmp_path, keras_v1):
    path = tmp_path / "m.safetensors"
    save(keras_v1, path)
    with safe_open(path, framework="numpy") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    options = json.loads(metadata["options"])
    options["num_classes"] = 7
    bad = tmp_path / "bad.safetensors"
    safetensors.numpy.save_file(tensors, bad, {**metadata, "options": json.dumps(options)})
    with pytest.raises(ValueError, match=r"Logits/weights: expected \(256, 7\), got \(256, 10\)"):
        load(bad)


def _small_model():
    return build_model("mobilenet_v1", depth_multiplier=0.25, input_size=32, num_classes=3, seed=0)


def test_class_names_are_kept_and_checked(tmp_path):
    model = _small_model()
    save(model, tmp_path / "unnamed.safetensors")
    with safe_open(tmp_path / "unnamed.safetensors", framework="numpy") as handle:
        assert "classes" not in handle.metadata()
    assert load(tmp_path / "unnamed.safetensors").class_names is None
    model.class_names = ["cat", "dog", "emu"]
    save(model, tmp_path / "named.safetensors")
    assert load(tmp_path / "named.safetensors").class_names == ["cat", "dog", "emu"]
    for names, message in [(["cat", "dog"], "2 names for a model with 3 classes"),
                           (["cat", "cat", "dog"], "'cat' is named more than once"),
                           (["cat", "", "dog"], "expected a list of non-empty strings")]:
        model.class_names = names
        with pytest.raises(ValueError, match=message):
            save(model, tmp_path / "refused.safetensors")
    assert not (tmp_path / "refused.safetensors").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_saved_file_follows_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        save(_small_model(), tmp_path / "m.safetensors")
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "m.safetensors").st_mode & 0o777 == 0o666 & ~umask


def test_load_state_dict_refuses_non_finite_values_after_the_cast_and_changes_nothing():
    model = _small_model()
    before = model.state_dict()
    for name, value, message in [
            ("Logits/biases", 1e300, r"Logits/biases: holds a non-finite value \(inf"),  # float32 inf
            ("Conv2d_0/weights", np.nan, r"Conv2d_0/weights: holds a non-finite value \(nan"),
            ("Conv2d_0/BatchNorm/moving_variance", -1.0, "a moving variance is negative")]:
        state = {key: array.astype(np.float64) for key, array in before.items()}
        state[name].flat[0] = value
        with pytest.raises(ValueError, match=message):
            model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)

"""Keras 3 native files (.keras, .weights.h5) and Keras transfer-learning models (a nested
keras.applications base, GlobalAveragePooling2D, Dropout, Dense(5, softmax)) in every format,
against Keras' own outputs; an archive's config is data, never run."""

import base64
import json
import marshal
import sys
import zipfile

import h5py
import numpy as np
import pytest

from npmobilenet import functional as F
from npmobilenet.io.convert import convert

from .conftest import FIXTURES, SIZES, relative_error


def _inputs(data, size, rescaled):
    """Keras' Rescaling(1/127.5, -1) is our preprocessing: applied here as Keras computes it."""
    x = data[f"x_{size}"]
    return x * np.float32(1 / 127.5) - np.float32(1) if rescaled else x


def _weights_member(archive, tmp_path, drop_names=False):
    """The ``model.weights.h5`` inside a ``.keras`` archive, which is the ``.weights.h5``
    layout, as a file (without the layers' ``name`` attributes when ``drop_names``)."""
    path = tmp_path / f"{archive.stem}.weights.h5"
    with zipfile.ZipFile(archive) as z:
        path.write_bytes(z.read("model.weights.h5"))
    if drop_names:
        with h5py.File(path, "a") as f:
            f.visititems(lambda name, obj: obj.attrs.__delitem__("name") if "name" in obj.attrs else None)
    return path


def _rewrite_config(archive, path, edit, weights=None):
    """A copy of ``archive`` whose config.json went through ``edit`` (and, optionally, other
    weights bytes)."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            raw = source.read(info)
            if info.filename == "config.json":
                config = json.loads(raw)
                edit(config)
                raw = json.dumps(config).encode()
            elif info.filename == "model.weights.h5" and weights is not None:
                raw = weights
            target.writestr(info.filename, raw)
    return path


NATIVE = [  # (file, expected, Rescaling inside the model)
    ("keras_mobilenet_v1.keras", "expected_keras3_mobilenet_v1.npz", False),
    ("keras_mobilenet_v2.keras", "expected_keras3_mobilenet_v2.npz", False),
    ("keras_mobilenet_v3_small.keras", "expected_keras_mobilenet_v3_small.npz", True),
    ("keras_mobilenet_v3_small.weights.h5", "expected_keras_mobilenet_v3_small.npz", True),
]


@pytest.mark.parametrize("name, expected, rescaled", NATIVE, ids=[n for n, _, _ in NATIVE])
def test_keras3_native_files_reproduce_keras_logits(name, expected, rescaled, tmp_path):
    files = [FIXTURES / name]
    if name.endswith(".keras") and "v3" not in name:  # its weights member is a .weights.h5
        files.append(_weights_member(FIXTURES / name, tmp_path))
    data = np.load(FIXTURES / expected)
    for path in files:
        result = convert(path)  # format, framework and architecture detected
        assert result.source == "keras" and result.model.graph.options.num_classes == 10
        for size in SIZES:
            logits = result.model(_inputs(data, size, rescaled)).data
            assert relative_error(logits, data[f"logits_{size}"]) < 1e-4, (path.name, size)


def test_layer_names_come_from_the_config_when_the_weights_lack_them(tmp_path):
    """Keras 3 before the ``name`` attribute: a .keras archive's config names the groups; a bare
    .weights.h5 cannot be mapped and is refused saying so."""
    archive = FIXTURES / "keras_mobilenet_v2.keras"
    bare = _weights_member(archive, tmp_path, drop_names=True)
    with pytest.raises(ValueError, match=r"weights\.h5: group layers/.*: the layer's name is not recorded"):
        convert(bare)
    rebuilt = _rewrite_config(archive, tmp_path / "rebuilt.keras", lambda config: None, bare.read_bytes())
    data = np.load(FIXTURES / "expected_keras3_mobilenet_v2.npz")
    logits = convert(rebuilt).model(data["x_67x45"]).data
    assert relative_error(logits, data["logits_67x45"]) < 1e-4


def test_an_archives_custom_objects_and_lambdas_are_never_run(tmp_path, monkeypatch):
    """A config naming a lambda (marshalled bytecode) and a custom class from an importable
    module: both would write a marker if deserialised; the conversion reads past them."""
    marker = tmp_path / "ran"
    (tmp_path / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Evil: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code = base64.b64encode(marshal.dumps(compile(f"open({str(marker)!r}, 'w')", "x", "eval"))).decode()

    def add_hostile_layers(config):
        lam = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
               "config": {"name": "lambda", "function": {"class_name": "__lambda__",
                                                         "config": {"code": code, "defaults": None,
                                                                    "closure": None}}}}
        custom = {"module": "evil_module", "class_name": "Evil", "registered_name": "evil>Evil",
                  "config": {"name": "evil"}}
        config["config"]["layers"][1:1] = [lam, custom]

    path = _rewrite_config(FIXTURES / "keras_transfer_mobilenet_v2.keras", tmp_path / "hostile.keras",
                           add_hostile_layers)
    data = np.load(FIXTURES / "expected_keras_transfer_mobilenet_v2.npz")
    probs = F.softmax(convert(path).model(data["x_64x64"]), axis=-1).data
    np.testing.assert_allclose(probs, data["probs_64x64"], atol=1e-4)
    assert not marker.exists() and "evil_module" not in sys.modules


TRANSFER = [  # (file, Rescaling inside the base)
    ("keras_transfer_mobilenet_v1.h5", False),  # Keras 2 full-model layout
    ("keras_transfer_mobilenet_v1.keras", False),
    ("keras_transfer_mobilenet_v2.h5", False),
    ("keras_transfer_mobilenet_v2_keras3.h5", False),  # Keras 3 legacy model.save("x.h5")
    ("keras_transfer_mobilenet_v2.keras", False),
    ("keras_transfer_mobilenet_v3_small_keras3.h5", True),
    ("keras_transfer_mobilenet_v3_small.keras", True),
]


@pytest.mark.parametrize("name, rescaled", TRANSFER, ids=[n for n, _ in TRANSFER])
def test_transfer_learning_models_reproduce_keras_probabilities(name, rescaled):
    """The Dense(5, softmax) becomes the classifier: the model returns its logits, whose softmax
    is Keras' output within 1e-4."""
    arch = name.removeprefix("keras_transfer_").split(".")[0].removesuffix("_keras3")
    result = convert(FIXTURES / name)
    assert (result.source, result.arch) == ("keras", arch)
    assert result.model.graph.options.num_classes == 5
    assert any("applies softmax" in note for note in result.notes)
    data = np.load(FIXTURES / f"expected_keras_transfer_{arch}.npz")
    for size in SIZES:
        logits = result.model(_inputs(data, size, rescaled))
        probs = F.softmax(logits, axis=-1).data
        assert np.abs(probs - data[f"probs_{size}"]).max() < 1e-4, size
    assert np.abs(data["probs_64x64"][0] - data["probs_64x64"][1]).max() > 1e-2


def _layer(config, class_name):
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == class_name)


@pytest.mark.parametrize("edit, message", [
    (lambda c: _layer(c, "GlobalAveragePooling2D").update(class_name="GlobalMaxPooling2D"),
     r"pools its features with GlobalMaxPooling2D 'global_average_pooling2d'"),
    (lambda c: _layer(c, "Dense")["config"].update(activation="sigmoid"),
     r"the classifier Dense 'dense' applies 'sigmoid'; only softmax or linear"),
])
def test_heads_that_would_compute_something_else_are_refused(edit, message, tmp_path):
    path = _rewrite_config(FIXTURES / "keras_transfer_mobilenet_v1.keras", tmp_path / "edited.keras", edit)
    with pytest.raises(ValueError, match=message):
        convert(path)


def test_archives_that_are_broken_or_too_big_are_refused_naming_the_file(tmp_path):
    source = FIXTURES / "keras_mobilenet_v1.keras"
    cut = tmp_path / "cut.keras"
    cut.write_bytes(source.read_bytes()[:500_000])
    with pytest.raises(ValueError, match=r"cut\.keras: corrupt or truncated \.keras archive"):
        convert(cut)
    with pytest.raises(ValueError, match=r"cut\.keras: corrupt or truncated \.keras archive"):
        convert(cut, source="keras")
    bomb = tmp_path / "bomb.keras"  # config.json padded with 20 MB of spaces, deflated
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("config.json", z.read("config.json") + b" " * (20 << 20))
        out.writestr("model.weights.h5", z.read("model.weights.h5"))
    with pytest.raises(ValueError, match=r"bomb\.keras: member 'config\.json' declares .* more than LIMITS\['zip_ratio'\]"):
        convert(bomb)
    weightless = tmp_path / "weightless.keras"
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(weightless, "w") as out:
        out.writestr("config.json", z.read("config.json"))
    with pytest.raises(ValueError, match=r"weightless\.keras: no 'model\.weights\.h5' in the archive"):
        convert(weightless)

"""CIFAR-10 in both official layouts: the committed fixtures are what the script makes, both
read to the same images, labels and names, and the Python layout is read without pickle: a
CIFAR-looking pickle that would run code is refused, naming what it calls, and nothing runs."""

import importlib.util
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npmobilenet.data import cifar10
from npmobilenet.io.cifar import UnsafeCifarPickleError, find_cifar10, read_cifar10

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "cifar10"
BIN, PY = FIXTURE / "cifar-10-batches-bin", FIXTURE / "cifar-10-batches-py"


def _script():
    spec = importlib.util.spec_from_file_location("make_cifar_fixtures", ROOT / "scripts" / "make_cifar_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_fixtures_are_what_the_script_makes(tmp_path):
    _script().write(tmp_path)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(FIXTURE) for p in FIXTURE.rglob("*") if p.is_file())
    for name in made:
        assert (tmp_path / name).read_bytes() == (FIXTURE / name).read_bytes(), name


def test_both_layouts_give_the_same_data():
    binary, python = read_cifar10(BIN), read_cifar10(PY)
    assert binary.class_names == python.class_names == ["airplane", "automobile", "bird", "cat", "deer",
                                                        "dog", "frog", "horse", "ship", "truck"]
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(binary, name), getattr(python, name), err_msg=name)
    assert binary.train_images.shape == (300, 32, 32, 3) and binary.train_images.dtype == np.uint8
    assert binary.test_labels.dtype == np.int64 and np.bincount(binary.test_labels).tolist() == [10] * 10
    # The folder holding the layouts (or a layout folder itself) is found; bin is preferred.
    assert find_cifar10(FIXTURE) == (BIN, "bin") and find_cifar10(PY) == (PY, "py")


def test_the_python_layout_is_a_real_pickle_read_as_python_would():
    """Python's own unpickler (on our own fixture file, as the oracle) reads what ours does."""
    batch = pickle.loads((PY / "data_batch_2").read_bytes(), encoding="bytes")
    ours = read_cifar10(PY)
    rows = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(ours.train_images[60:120], rows)
    assert ours.train_labels[60:120].tolist() == batch[b"labels"]


def test_the_datasets_carry_the_meta_file_s_names_and_a_model_s_order():
    train, test = cifar10(FIXTURE)
    assert train.class_indices["truck"] == 9 and len(train) == 300 and len(test) == 100
    reversed_names = {name: 9 - i for i, name in enumerate(train.class_indices)}
    _, renumbered = cifar10(FIXTURE, reversed_names)
    np.testing.assert_array_equal(renumbered.labels(), 9 - test.labels())
    with pytest.raises(ValueError, match=r"CIFAR-10 classes \['truck'\] are not among the model's"):
        cifar10(FIXTURE, {name: i for i, name in enumerate(list(train.class_indices)[:9])})


def _hostile_batch(marker: Path) -> bytes:
    """data_batch_1 with its labels list replaced by ``open(marker, "w")``: unpickled by Python,
    it creates ``marker``."""
    raw = (PY / "data_batch_1").read_bytes()
    payload = (b"cbuiltins\nopen\n" + b"X" + struct.pack("<I", len(str(marker))) + str(marker).encode()
               + b"X\x01\x00\x00\x00w" + b"\x86R")
    start = raw.index(b"U\x06labels")
    end = raw.index(b"U\x0bbatch_label")
    return raw[:start] + b"U\x06labels" + payload + raw[end:]


def test_a_cifar_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    hostile = tmp_path / "cifar-10-batches-py"
    hostile.mkdir()
    for path in PY.iterdir():
        (hostile / path.name).write_bytes(path.read_bytes())
    (hostile / "data_batch_1").write_bytes(_hostile_batch(marker))
    with pytest.raises(UnsafeCifarPickleError) as refused:
        read_cifar10(tmp_path)
    assert str(refused.value).startswith(f"{hostile / 'data_batch_1'}: refusing the global builtins.open: ")
    assert "nothing from it was run" in str(refused.value)
    assert not marker.exists()
    # The payload is live: Python's unpickler, in another process, runs it.
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read(), "
                    "encoding='bytes')", str(hostile / "data_batch_1")], check=False, capture_output=True)
    assert marker.exists()


@pytest.mark.parametrize("edit, message", [
    (lambda raw: raw[: len(raw) // 2], r"truncated pickle"),
    (lambda raw: raw.replace(b"cnumpy\ndtype\n", b"cnumpy\nDtype\n", 1), r"refusing the global numpy.Dtype"),
    (lambda raw: raw.replace(b"U\x02u1", b"U\x02f8", 1), r"refusing a call of dtype"),
    (lambda raw: raw.replace(b"K\x01K<M\x00\x0c\x86", b"K\x01K=M\x00\x0c\x86", 1),
     r"an array of shape \(61, 3072\) stores 184320 bytes"),
    (lambda raw: b"\x80\x02cos\nsystem\n" + raw[2:], r"refusing the global os.system"),
    (lambda raw: raw[:-2] + b"\x93u.", r"refusing pickle opcode b'\\x93'"),
])
def test_damaged_or_foreign_pickles_are_one_clear_error(tmp_path, edit, message):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for path in PY.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "data_batch_1").write_bytes(edit((PY / "data_batch_1").read_bytes()))
    with pytest.raises(ValueError, match=message):
        read_cifar10(folder)


def test_damaged_binary_batches_and_missing_files_are_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for path in BIN.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "test_batch.bin").write_bytes((BIN / "test_batch.bin").read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"test_batch.bin: 307299 bytes is not a whole number of 3073-byte"):
        read_cifar10(folder)
    (folder / "test_batch.bin").write_bytes(b"\x0a" + (BIN / "test_batch.bin").read_bytes()[1:])
    with pytest.raises(ValueError, match=r"test_batch.bin: label 10 is beyond the 10 classes"):
        read_cifar10(folder)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_3.bin: missing from the CIFAR-10 folder"):
        read_cifar10(folder)
    with pytest.raises(ValueError, match=r"docs: no CIFAR-10 batches"):
        read_cifar10(ROOT / "docs")

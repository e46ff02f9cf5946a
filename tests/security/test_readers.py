"""Hostile weight and model files through the command line: each is refused with exit 1 and one
line naming the file and the problem; nothing is written (a previous output stays as it was),
nothing from outside the file reaches the output, and no memory bomb goes off (the memory cases
run under an address-space limit, so an allocation that escaped would be a MemoryError, not a
refusal naming the limit)."""

from __future__ import annotations

import json
import struct
import zipfile

import h5py
import numpy as np
import pytest
from safetensors import safe_open

import npmobilenet as nm

from . import hostile_files as hostile
from .cli import assert_one_line_error, run_cli

# A full-size MobileNetV2 convert needs under 400 MiB of address space (measured with
# RLIMIT_AS); this leaves about 1.6 GiB for the reader, far below what each bomb asks for.
MEMORY_MIB = 2048
SECRET_TEXT = hostile.SECRET[:17].decode()


@pytest.fixture
def secret(tmp_path):
    """A file beside the weights holding bytes that must never reach any output."""
    path = tmp_path / "secret.bin"
    path.write_bytes(hostile.SECRET)
    return path


def _convert(source: str, arch: str, src, dst):
    return run_cli("convert", "--from", source, "--arch", arch, src, dst, memory_mib=MEMORY_MIB)


def _assert_refused(result, src, dst, *fragments, previous: bytes | None = None) -> None:
    assert_one_line_error(result, str(src), *fragments)
    assert SECRET_TEXT not in result.stdout + result.stderr
    if previous is None:
        assert not dst.exists()
    else:
        assert dst.read_bytes() == previous


def _torch_refused(path, tmp_path, *fragments) -> None:
    destination = tmp_path / "out.safetensors"
    destination.write_bytes(b"the previous model file")
    result = _convert("torchvision", "mobilenet_v2", path, destination)
    _assert_refused(result, path, destination, *fragments, previous=b"the previous model file")


def _keras_refused(path, tmp_path, *fragments) -> None:
    destination = tmp_path / "out.safetensors"
    _assert_refused(_convert("keras", "mobilenet_v2", path, destination), path, destination, *fragments)


# -- torchvision .pth ----------------------------------------------------------------------------

FOUR_FLOATS = {"0": np.arange(4, dtype=np.float32).tobytes()}


@pytest.mark.parametrize("build", [
    # BUILD right after the allowlisted rebuild: slot state resizing the checked tensor
    hostile.tensor("0", 4, 0, (4,), (1,)) + hostile.value((None, {"size": (1 << 24,), "stride": (1,)})) + b"b",
    # the same through a dict state
    hostile.tensor("0", 4, 0, (4,), (1,)) + hostile.value({"size": (1 << 24,)}) + b"b",
], ids=["slot-state", "dict-state"])
def test_build_cannot_reshape_a_tensor_after_its_check(tmp_path, secret, build):
    path = hostile.write_pth(tmp_path / "oob.pth", hostile.state_dict({"w": build}), FOUR_FLOATS)
    _torch_refused(path, tmp_path, "refusing to set the state of a tensor (pickle BUILD)")


def test_build_on_a_storage_is_refused(tmp_path):
    storage = (b"(" + hostile.value("storage") + hostile.global_("torch", "FloatStorage")
               + hostile.value("0") + hostile.value("cpu") + hostile.value(4) + b"tQ")
    grow = storage + hostile.value((None, {"numel": 1 << 30})) + b"b"
    path = hostile.write_pth(tmp_path / "grow.pth", hostile.state_dict({"s": grow}), FOUR_FLOATS)
    _torch_refused(path, tmp_path, "refusing to set the state of a storage (pickle BUILD)")


@pytest.mark.parametrize("size, stride, fragments", [
    ((60000, 50000), (0, 0), ("would take 12000000000 bytes", "LIMITS['tensor_bytes']")),
    ((4,), (2,), ("reaches past its storage of 4 elements",)),
])
def test_views_are_checked_against_the_storage_and_the_limits(tmp_path, size, stride, fragments):
    pickled = hostile.state_dict({"w": hostile.tensor("0", 4, 0, size, stride)})
    _torch_refused(hostile.write_pth(tmp_path / "view.pth", pickled, FOUR_FLOATS), tmp_path, *fragments)


def test_unknown_byteorder_is_refused(tmp_path):
    pickled = hostile.state_dict({"w": hostile.tensor("0", 4, 0, (4,), (1,))})
    path = hostile.write_pth(tmp_path / "order.pth", pickled, FOUR_FLOATS, byteorder=b"middle")
    _torch_refused(path, tmp_path, "byte order 'middle', expected 'little' or 'big'")


def test_nine_gib_deflated_member_is_refused_before_inflating(tmp_path):
    path = hostile.deflate_bomb(tmp_path / "bomb.pth", 9 << 30)
    assert path.stat().st_size < 40 << 20
    _torch_refused(path, tmp_path, "the storages declare 9663676416 bytes, more than the file's")


def test_member_declaring_more_than_the_file_holds_is_refused(tmp_path):
    path = tmp_path / "declared.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", hostile.state_dict({"w": hostile.tensor("0", 4, 0, (4,), (1,))}))
        info = zipfile.ZipInfo("archive/data/0")
        archive.writestr(info, FOUR_FLOATS["0"])
        info.file_size = info.compress_size = 10 << 30  # the central directory lies
    _torch_refused(path, tmp_path, "zip member 'archive/data/0' declares 10737418240 bytes at offset")


@pytest.mark.parametrize("compression, flag, fragment", [
    (zipfile.ZIP_DEFLATED, 0, "is compressed (method 8); torch.save stores members uncompressed"),
    (zipfile.ZIP_STORED, 0x1, "is encrypted"),
])
def test_zip_features_torch_does_not_write_are_refused(tmp_path, compression, flag, fragment):
    path = tmp_path / "repacked.pth"
    with zipfile.ZipFile(hostile.TORCH_FIXTURE) as original, zipfile.ZipFile(path, "w") as copy:
        for info in original.infolist():
            new = zipfile.ZipInfo(info.filename, info.date_time)
            new.compress_type = compression
            copy.writestr(new, original.read(info))
            new.flag_bits |= flag  # in the central directory, which readers trust
    _torch_refused(path, tmp_path, fragment)


@pytest.mark.parametrize("pickled, fragment", [
    # a tuple nested 200,000 deep as a dict key: hashing it overflows the C stack (SIGSEGV)
    (b"\x80\x02}N" + b"\x85" * 200_000 + b"K\x01s.", "nests tuples more than 100 deep"),
    # a memo index of 2**28: the C unpickler would zero a 2 GiB memo table first
    (hostile.state_dict({"w": hostile.tensor("0", 4, 0, (4,), (1,)) + b"r" + struct.pack("<I", 1 << 28)}),
     "missing tensor 'classifier.1.bias'"),
    # a list holding itself
    (hostile.state_dict({"loop": b"]q\x01h\x01a"}), "missing tensor 'classifier.1.bias'"),
    # a pickle too large to be a state dict's
    (hostile.state_dict({"big": hostile.value("x" * (1 << 20))}), "LIMITS['pickle_objects']"),
    # a bytearray declaring 1 TiB: even the pure-Python unpickler allocates it before reading
    (hostile.state_dict({"bytes": b"\x96" + struct.pack("<Q", 1 << 40)}), "BYTEARRAY8"),
], ids=["deep-tuple", "memo-index", "self-reference", "oversized", "bytearray8"])
def test_pickle_structure_cannot_crash_or_exhaust_the_reader(tmp_path, pickled, fragment):
    _torch_refused(hostile.write_pth(tmp_path / "structure.pth", pickled, FOUR_FLOATS), tmp_path, fragment)


def test_non_finite_torch_weight_is_refused_naming_it(tmp_path):
    nan_first = lambda name, data: (np.float32("nan").tobytes() + data[4:]) if name.endswith("/data/0") else data
    path = hostile.rewrite_zip(hostile.TORCH_FIXTURE, tmp_path / "nan.pth", nan_first)
    _torch_refused(path, tmp_path, "features.0.0.weight: holds a non-finite value")


# -- Keras HDF5 ----------------------------------------------------------------------------------

KERNEL = "Conv1/Conv1/kernel:0"  # (3, 3, 3, 8) float32 in the fixture


def test_external_raw_storage_is_never_read(tmp_path, secret):
    path = hostile.keras_copy(tmp_path / "external.h5")
    hostile.replace_dataset(path, KERNEL, shape=(3, 3, 3, 8), dtype="f4", external=[(str(secret), 0, 864)])
    _keras_refused(path, tmp_path, "tensor Conv1/Conv1/kernel:0 keeps its data in another file")


def test_virtual_dataset_is_never_read(tmp_path, secret):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.frombuffer(hostile.SECRET[:864], np.float32).reshape(3, 3, 3, 8)
    path = hostile.keras_copy(tmp_path / "virtual.h5")
    with h5py.File(path, "r+") as f:
        del f[KERNEL]
        layout = h5py.VirtualLayout(shape=(3, 3, 3, 8), dtype="f4")
        layout[...] = h5py.VirtualSource(str(other), "x", shape=(3, 3, 3, 8))
        f.create_virtual_dataset(KERNEL, layout)
    _keras_refused(path, tmp_path, "tensor Conv1/Conv1/kernel:0 is a virtual dataset")


def test_filter_that_would_load_a_plugin_is_refused(tmp_path):
    from h5py import h5d, h5p, h5s, h5t, h5z

    path = hostile.keras_copy(tmp_path / "plugin.h5")
    with h5py.File(path, "r+") as f:
        del f[KERNEL]
        plist = h5p.create(h5p.DATASET_CREATE)
        plist.set_chunk((3, 3, 3, 8))
        plist.set_filter(32015, h5z.FLAG_OPTIONAL)  # zstd: a plugin; optional, so it can be written
        h5d.create(f.id, KERNEL.encode(), h5t.NATIVE_FLOAT, h5s.create_simple((3, 3, 3, 8)), dcpl=plist)
    _keras_refused(path, tmp_path, "passes through HDF5 filter 32015, which is not built in")


def test_external_link_is_never_followed(tmp_path, secret):
    other = hostile.keras_copy(tmp_path / "other.h5")
    hostile.replace_dataset(other, KERNEL, data=np.frombuffer(hostile.SECRET[:864], np.float32).reshape(3, 3, 3, 8))
    path = hostile.keras_copy(tmp_path / "linked.h5")
    with h5py.File(path, "r+") as f:
        del f["Conv1"]
        f["Conv1"] = h5py.ExternalLink(str(other), "/Conv1")
    _keras_refused(path, tmp_path, "layer 'Conv1': 'Conv1' is an external link")


def test_soft_link_loop_is_not_followed(tmp_path):
    path = hostile.keras_copy(tmp_path / "loop.h5")
    with h5py.File(path, "r+") as f:
        del f["Conv1"]
        f["Conv1"] = h5py.SoftLink("/Conv1")
    _keras_refused(path, tmp_path, "'Conv1' is a soft link")


def test_twelve_gb_chunked_dataset_is_refused_before_reading(tmp_path):
    path = hostile.keras_copy(tmp_path / "huge.h5")
    hostile.replace_dataset(path, "predictions/predictions/kernel:0", shape=(3_000_000_000,),
                            dtype="f4", chunks=(1 << 20,), compression="gzip")
    assert path.stat().st_size < 2 << 20
    _keras_refused(path, tmp_path, "would take 12000000000 bytes", "LIMITS['tensor_bytes']")


def test_decompression_bomb_within_the_tensor_limit_is_refused(tmp_path):
    path = hostile.keras_copy(tmp_path / "inflate.h5")
    hostile.write_zero_chunks(path, "predictions/predictions/kernel:0", (256 << 20,), 1 << 20)
    assert path.stat().st_size < 4 << 20  # 1 GiB when read
    _keras_refused(path, tmp_path, "would take 1073741824 bytes from", "LIMITS['zip_ratio']")


def _group_for_dataset(f):
    del f[KERNEL]
    f.create_group(KERNEL)


def _scalar_layer_names(f):
    f.attrs["layer_names"] = b"Conv1"


@pytest.mark.parametrize("edit, fragment", [
    (_group_for_dataset, "tensor Conv1/Conv1/kernel:0 is a group, expected a dataset"),
    (_scalar_layer_names, "attribute 'layer_names' must be a list of strings"),
], ids=["group-for-dataset", "scalar-layer-names"])
def test_wrong_structure_is_named(tmp_path, edit, fragment):
    path = hostile.keras_copy(tmp_path / "structure.h5")
    with h5py.File(path, "r+") as f:
        edit(f)
    _keras_refused(path, tmp_path, fragment)


def test_corrupt_header_is_one_line(tmp_path):
    path = hostile.keras_copy(tmp_path / "corrupt.h5")
    data = bytearray(path.read_bytes())
    data[200:1200] = b"\xff" * 1000  # the root group's object header and its attributes
    path.write_bytes(bytes(data))
    _keras_refused(path, tmp_path)


@pytest.mark.parametrize("name, values, fragment", [
    ("bn_Conv1/bn_Conv1/moving_variance:0", -1.0, "bn_Conv1/moving_variance: a moving variance is negative"),
    (KERNEL, np.inf, "Conv1/kernel: holds a non-finite value"),
])
def test_non_finite_or_negative_variance_keras_weights_are_refused(tmp_path, name, values, fragment):
    path = hostile.keras_copy(tmp_path / "values.h5")
    hostile.set_values(path, name, values)
    _keras_refused(path, tmp_path, fragment)


# -- model files ---------------------------------------------------------------------------------

def _options(source, **update) -> str:
    with safe_open(source, framework="numpy") as handle:
        return json.dumps({**json.loads(handle.metadata()["options"]), **update})


def _offsets_past_the_end(source, target):
    raw = source.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + length])
    name = next(key for key in header if key != "__metadata__")
    header[name]["data_offsets"][1] += 1 << 30
    encoded = json.dumps(header).encode()
    target.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + length:])
    return target


@pytest.mark.parametrize("make, fragment", [
    (lambda s, t: hostile.edited_model_file(s, t, {"options": _options(s, dtype="float16")}), "unknown option 'dtype'"),
    (lambda s, t: hostile.edited_model_file(s, t, {"options": _options(s, spec_or_name="mobilenet_v2")}),
     "unknown option 'spec_or_name'"),
    (lambda s, t: hostile.edited_model_file(s, t, {"spec": json.dumps(str(t.parent / "secret.json"))}),
     "metadata 'spec' must be an object"),
    (lambda s, t: hostile.edited_model_file(s, t, {"classes": json.dumps(["cat", "dog"])}), "classes: 2 names for a model with 3"),
    (lambda s, t: hostile.edited_model_file(s, t, {"classes": json.dumps(["cat", "cat", "dog"])}), "'cat' is named more than once"),
    (lambda s, t: hostile.edited_model_file(s, t, tensors={"Logits/biases": np.array([0, np.nan, 0], np.float32)}),
     "Logits/biases: holds a non-finite value"),
    (_offsets_past_the_end, "not a readable model file"),
    (lambda s, t: hostile.edited_model_file(s, t, {"preprocess": json.dumps(
        {"name": "x", "resize": 10**6, "crop": 10**6, "mean": [0.5] * 3, "std": [0.5] * 3})}),
     "preprocess.resize"),
], ids=["dtype-option", "spec-option", "spec-path", "classes-count", "classes-repeated", "nan",
        "offsets", "resize"])
def test_hostile_model_files_are_refused(model_file, tmp_path, make, fragment):
    source, image = model_file
    (tmp_path / "secret.json").write_text(json.dumps(nm.load_spec("mobilenet_v1")))
    hostile_file = make(source, tmp_path / "hostile.safetensors")
    result = run_cli("predict", "--weights", hostile_file, image, memory_mib=MEMORY_MIB)
    assert_one_line_error(result, str(hostile_file), fragment)
    assert result.stdout == ""

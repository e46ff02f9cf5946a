"""TF-slim checkpoints (tensor bundle V2) read without TensorFlow: converted against TF's own
logits, EMA shadows or raw values, optimizer slots ignored, and every refusal naming the file."""

import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmobilenet.io.convert import convert
from npmobilenet.io.crc32c import crc32c, mask
from npmobilenet.io.tf_checkpoint import _block_handle, _entries, open_checkpoint

from .conftest import FIXTURES, SIZES, relative_error
from .test_cli import _run

PREFIX = "model.ckpt-1000"
ARCHS = ("mobilenet_v1", "mobilenet_v2")
_converted = {}


def _result(arch, **kwargs):
    key = (arch, tuple(sorted(kwargs.items())))
    if key not in _converted:
        _converted[key] = convert(FIXTURES / f"tf_slim_{arch}", **kwargs)
    return _converted[key]


def _expected(arch):
    return np.load(FIXTURES / f"expected_tf_slim_{arch}.npz")


@pytest.mark.parametrize("arch", ARCHS)
def test_slim_checkpoints_reproduce_tensorflows_logits(arch):
    """Detected from the folder alone (format, framework, architecture, multiplier); float32
    within 1e-4 of TF's float64 forward at every size (67x45 and 45x70 are odd); float64 within
    1e-9; the logits depend on the input."""
    result = _result(arch)
    assert (result.source, result.arch) == ("tf-slim", arch)
    data = _expected(arch)
    for size in SIZES:
        logits = result.model(data[f"x_{size}"]).data
        assert logits.dtype == np.float32
        assert relative_error(logits, data[f"logits_{size}"]) < 1e-4
        assert relative_error(data[f"logits_{size}"][0], data[f"logits_{size}"][1]) > 1e-2
    double = _result(arch, dtype=np.float64).model
    logits = double(data["x_67x45"].astype(np.float64)).data
    assert relative_error(logits, data["logits_67x45"]) < 1e-9


def test_v1_keeps_slims_head_and_background_class():
    model = _result("mobilenet_v1").model
    o = model.graph.options
    assert (o.depth_multiplier, o.num_classes, o.bn_eps, o.padding, o.global_pool) == (0.125, 1001, 1e-3, "SAME", False)
    assert model.preprocess["name"] == "slim"
    assert model.class_names[0] == "background" and model.class_names[1] == "tench"


def test_v2_without_batch_norm_scale_and_with_slims_default_conv_1():
    """slim.batch_norm's default has no gamma (filled with ones); without
    finegrain_classification_mode Conv_1 is scaled (320 channels at width 0.25)."""
    model = _result("mobilenet_v2").model
    state = model.state_dict()
    assert all((state[k] == 1).all() for k in state if k.endswith("BatchNorm/gamma"))
    assert state["Conv_1/weights"].shape == (1, 1, 80, 320)
    assert model.graph.options.num_classes == 10


@pytest.mark.parametrize("arch", ARCHS)
def test_ema_shadows_are_preferred_and_the_raw_values_can_be_chosen(arch):
    result = _result(arch)
    assert any("ExponentialMovingAverage shadows" in note for note in result.notes)
    raw = _result(arch, ema=False)
    data = _expected(arch)
    logits = raw.model(data["x_45x70"]).data
    assert relative_error(logits, data["logits_raw_45x70"]) < 1e-4
    assert relative_error(logits, data["logits_45x70"]) > 1e-2
    assert any(name.endswith("/ExponentialMovingAverage") for name in raw.ignored)


def test_optimizer_slots_and_global_step_are_ignored_and_listed(tmp_path):
    ignored = _result("mobilenet_v1").ignored
    assert "global_step" in ignored
    assert "MobilenetV1/Conv2d_0/weights/RMSProp" in ignored
    assert "MobilenetV1/Conv2d_0/weights/RMSProp_1" in ignored
    assert not any(name.endswith("/ExponentialMovingAverage") for name in ignored)
    result = _run("convert", "--verbose", str(FIXTURES / "tf_slim_mobilenet_v1"), str(tmp_path / "m.safetensors"))
    assert result.returncode == 0, result.stderr
    assert "tf-slim mobilenet_v1, depth_multiplier 0.125, 1001 classes" in result.stdout
    assert "    global_step" in result.stdout.splitlines()


def test_a_checkpoint_is_named_by_prefix_index_shard_or_folder(tmp_path):
    folder = FIXTURES / "tf_slim_mobilenet_v2"
    for path in (folder, folder / PREFIX, folder / f"{PREFIX}.index",
                 folder / f"{PREFIX}.data-00000-of-00001"):
        assert open_checkpoint(path).prefix == str(folder / PREFIX)
    copy = _copy(tmp_path)
    # TF writes absolute paths unless told otherwise: only the base name counts, in the folder
    (copy / "checkpoint").write_text(f'model_checkpoint_path: "/elsewhere/{PREFIX}"\n')
    assert open_checkpoint(copy).prefix == str(copy / PREFIX)
    (copy / "checkpoint").write_text('model_checkpoint_path: "../../etc/passwd"\n')
    with pytest.raises(FileNotFoundError, match="passwd.index does not exist"):
        open_checkpoint(copy)


def test_crc32c_and_its_mask():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")
    assert mask(0) == 0xA282EAD8


# -- refusals: each a ValueError naming the file and the problem ------------------------------

def _copy(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "tf_slim_mobilenet_v1", folder)
    return folder


def _edit(path, offset, value: bytes):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(value)] = value
    path.write_bytes(bytes(raw))


def _data_block(index: bytes) -> tuple[int, int]:
    """(offset, size) of the index's first data block."""
    footer = index[-48:]
    _, pos = _block_handle(footer, 0, 40, "footer")
    (offset, size), _ = _block_handle(footer, pos, 40, "footer")
    _, handle = _entries(index[offset:offset + size], "index block")[0]
    return _block_handle(handle, 0, len(handle), "index block")[0]


def _refused(folder, *fragments):
    with pytest.raises(ValueError) as info:
        convert(folder)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_truncated_index(tmp_path):
    folder = _copy(tmp_path)
    index = folder / f"{PREFIX}.index"
    index.write_bytes(index.read_bytes()[:-100])
    _refused(folder, f"{PREFIX}.index", "bad magic number", "or truncated")
    index.write_bytes(index.read_bytes()[:30])
    _refused(folder, f"{PREFIX}.index", "shorter than an SSTable footer")


def test_bad_magic(tmp_path):
    folder = _copy(tmp_path)
    index = folder / f"{PREFIX}.index"
    _edit(index, index.stat().st_size - 1, b"\x00")
    _refused(folder, f"{PREFIX}.index", "bad magic number")


def test_entry_past_the_shards_end(tmp_path):
    folder = _copy(tmp_path)
    shard = folder / f"{PREFIX}.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-1000])
    _refused(folder, f"{PREFIX}.data-00000-of-00001", "reaches past the shard's end")


def test_tensor_checksum_mismatch(tmp_path):
    folder = _copy(tmp_path)
    entry = open_checkpoint(folder).entries["MobilenetV1/Conv2d_3_pointwise/weights/ExponentialMovingAverage"]
    shard = folder / f"{PREFIX}.data-00000-of-00001"
    _edit(shard, entry.offset + 5, bytes([shard.read_bytes()[entry.offset + 5] ^ 1]))
    _refused(folder, f"{PREFIX}.data-00000-of-00001",
             "'MobilenetV1/Conv2d_3_pointwise/weights/ExponentialMovingAverage': checksum mismatch")


def test_index_block_checksum_mismatch(tmp_path):
    folder = _copy(tmp_path)
    index = folder / f"{PREFIX}.index"
    offset, _ = _data_block(index.read_bytes())
    _edit(index, offset + 40, bytes([index.read_bytes()[offset + 40] ^ 0x10]))
    _refused(folder, f"{PREFIX}.index", "data block at offset", "checksum mismatch (corrupt index)")


def test_compressed_blocks_are_refused_clearly(tmp_path):
    folder = _copy(tmp_path)
    index = folder / f"{PREFIX}.index"
    raw = index.read_bytes()
    offset, size = _data_block(raw)
    crc = mask(crc32c(raw[offset:offset + size] + b"\x01"))
    _edit(index, offset + size, b"\x01" + crc.to_bytes(4, "little"))
    _refused(folder, f"{PREFIX}.index", "snappy-compressed")


def test_missing_shard(tmp_path):
    folder = _copy(tmp_path)
    os.remove(folder / f"{PREFIX}.data-00000-of-00001")
    _refused(folder, f"{PREFIX}.index", f"{PREFIX}.data-00000-of-00001 is missing")


def test_the_command_line_reports_a_refusal_in_one_line(tmp_path):
    folder = _copy(tmp_path)
    index = folder / f"{PREFIX}.index"
    _edit(index, index.stat().st_size - 1, b"\x00")
    result = _run("convert", str(folder), str(tmp_path / "out.safetensors"))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("npmobilenet: error: ") and "bad magic number" in lines[0]
    assert not (tmp_path / "out.safetensors").exists()


@settings(max_examples=60, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6),
       restamp=st.booleans())
def test_any_corrupted_index_is_read_or_refused_with_a_value_error(tmp_path_factory, edits, restamp):
    """Bytes of the index's data block changed anywhere, its checksum re-stamped (so the
    entries' parser, not the checksum, meets the garbage) or not: the checkpoint opens and its
    tensors read, or a ValueError names the file; nothing else escapes, nothing hangs."""
    folder = tmp_path_factory.mktemp("fuzz")
    for name in (f"{PREFIX}.index", f"{PREFIX}.data-00000-of-00001"):
        shutil.copy(FIXTURES / "tf_slim_mobilenet_v1" / name, folder / name)
    index = folder / f"{PREFIX}.index"
    raw = bytearray(index.read_bytes())
    offset, size = _data_block(bytes(raw))
    for position, value in edits:
        raw[offset + position % size] = value
    if restamp:
        raw[offset + size + 1:offset + size + 5] = mask(crc32c(bytes(raw[offset:offset + size + 1]))).to_bytes(4, "little")
    index.write_bytes(bytes(raw))
    try:
        checkpoint = open_checkpoint(folder / PREFIX)
        for name in list(checkpoint.entries)[:20]:
            checkpoint.read(name)
    except ValueError as error:
        assert str(folder) in str(error)

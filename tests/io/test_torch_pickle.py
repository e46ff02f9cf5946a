"""The restricted .pth reader: equal to torch's own loader, and refusing code in pickles."""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from npmobilenet.io.torch_pickle import UnsafePickleError, read_torch_state_dict

from .conftest import FIXTURES


def _body(obj) -> bytes:
    """Protocol-2 opcodes of a plain object, without the PROTO header and STOP."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tensor_pickle(numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    """A state dict {'w': tensor} pickled as torch.save does, written opcode by opcode."""
    storage = (b"(" + _body("storage") + _global("torch", "FloatStorage") + _body("0")
               + _body("cpu") + _body(numel) + b"t" + b"Q")
    tensor = (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + _body(offset)
              + _body(size) + _body(stride) + b"\x89" + b"}" + b"tR")
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R" + _body("w") + tensor + b"s."


def _write_zip(path, pkl: bytes, storages: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pkl)
        archive.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_reads_the_fixture_like_torch(tv_pth):
    torch = pytest.importorskip("torch")
    ours = read_torch_state_dict(tv_pth)
    theirs = torch.load(tv_pth, weights_only=True)
    assert sorted(ours) == sorted(theirs)
    for name, tensor in theirs.items():
        expected = tensor.numpy()
        assert ours[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)
    assert ours["features.0.0.weight"].shape == (8, 3, 3, 3)


def test_legacy_format_and_strided_views(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    state = {"t": base.t(), "row": base[2], "half": torch.ones(3, dtype=torch.float16),
             "count": torch.tensor(7)}
    for legacy in (False, True):
        path = tmp_path / f"s{legacy}.pth"
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        ours = read_torch_state_dict(path)
        for name, tensor in state.items():
            assert ours[name].dtype == tensor.numpy().dtype
            np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=f"{name} legacy={legacy}")


def test_handmade_archive_reads_without_torch(tmp_path):
    values = np.arange(6, dtype=np.float32)
    path = tmp_path / "w.pth"
    _write_zip(path, _tensor_pickle(6, 0, (2, 3), (1, 2)), {"0": values.tobytes()})
    np.testing.assert_array_equal(read_torch_state_dict(path)["w"], values.reshape(3, 2).T)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, fmt):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": _RunsShell(marker)}, protocol=2)
    path = tmp_path / "evil.pth"
    if fmt == "zip":
        _write_zip(path, payload, {})
    else:
        path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        read_torch_state_dict(path)
    assert not marker.exists()


def test_legacy_header_then_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    stream = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, _RunsShell(marker)):
        pickle.dump(part, stream, protocol=2)
    path = tmp_path / "evil_legacy.pth"
    path.write_bytes(stream.getvalue())
    with pytest.raises(UnsafePickleError):
        read_torch_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("torch", "Tensor"),
                                         ("torch._utils", "_rebuild_from_type_v2"),
                                         ("numpy", "dtype")])
def test_only_allowlisted_globals(tmp_path, module, name):
    path = tmp_path / "g.pth"
    _write_zip(path, b"\x80\x02" + _global(module, name) + b".", {})
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        read_torch_state_dict(path)


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    path = tmp_path / "oob.pth"
    _write_zip(path, _tensor_pickle(4, 2, (100,), (1,)), {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(ValueError, match="past its storage"):
        read_torch_state_dict(path)


def test_short_storage_is_refused(tmp_path):
    path = tmp_path / "short.pth"
    _write_zip(path, _tensor_pickle(6, 0, (6,), (1,)), {"0": np.zeros(3, np.float32).tobytes()})
    with pytest.raises(ValueError, match="truncated: expected 24 bytes, found 12"):
        read_torch_state_dict(path)


def test_truncated_file_is_a_clear_error(tmp_path, tv_pth):
    path = tmp_path / "cut.pth"
    path.write_bytes(tv_pth.read_bytes()[:500_000])
    with pytest.raises(ValueError, match="truncated"):
        read_torch_state_dict(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        read_torch_state_dict(FIXTURES / "nope.pth")

"""Mutated files never crash a reader: bytes, pickle opcodes and header fields of valid ``.pth``,
Keras ``.h5``, model (``.safetensors``) and spec files are changed at random, and each reader
either accepts the file with finite weights or refuses it with ValueError or FileNotFoundError.

The readers run in one long-lived worker process (``fuzz_worker.py``) under an address-space
limit, several files per example; a worker killed by a signal fails the test naming the files it
was reading, and is started again for the next example.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import queue
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npmobilenet as nm

from . import hostile_files as hostile

WORKER = Path(__file__).with_name("fuzz_worker.py")
MEMORY_MIB = 2048  # as in test_readers: a bomb that escaped would be a MemoryError
TIMEOUT_S = 120
FILES_PER_EXAMPLE = 12
SPEC_FIXTURE = Path(nm.__file__).parent / "specs" / "mobilenet_v2.json"


# -- the worker ----------------------------------------------------------------------------------

def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_MIB << 20, MEMORY_MIB << 20))


class Worker:
    """The reader process: one request per batch of files, one JSON line back per file."""

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                        preexec_fn=_limit_memory)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.process.stdout, self.lines), daemon=True).start()

    @staticmethod
    def _pump(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)  # the worker exited

    def read(self, reader: str, paths: list[Path]) -> list[dict]:
        """Each file's outcome; fails the test if the worker dies or hangs on the batch."""
        try:
            self.process.stdin.write(json.dumps({"reader": reader, "paths": list(map(str, paths))}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died on the previous batch's failure; reported below
        results = []
        for _ in paths:
            try:
                line = self.lines.get(timeout=TIMEOUT_S)
            except queue.Empty:
                self.restart()
                pytest.fail(f"{reader} reader ran over {TIMEOUT_S} s on one of {paths[len(results):]}")
            if line is None:
                cause, stderr = self._death()
                pytest.fail(f"{reader} reader died ({cause}) on one of {paths[len(results):]}; "
                            f"its stderr ends: {stderr}")
            results.append(json.loads(line))
        return results

    def _death(self) -> tuple[str, str]:
        """How the worker ended and the end of its stderr; then a new worker is started."""
        code = self.process.wait()
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace")[-2000:]
        self.restart()
        return (f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"), tail

    def restart(self) -> None:
        self.close()
        self._start()

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def worker():
    process = Worker()
    yield process
    process.close()


def _check(worker: Worker, reader: str, files: list[bytes]) -> None:
    """Write the files and read them all in the worker: only documented refusals, and nothing
    non-finite accepted."""
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, data in enumerate(files):
            paths.append(Path(folder) / f"mutant{index}.{_SUFFIX[reader]}")
            paths[-1].write_bytes(data)
        for result in worker.read(reader, paths):
            assert result["documented"], f"{result['path']}: {result['error']}"
            assert not result.get("nonfinite"), f"{result['path']}: accepted {result['nonfinite']}"


_SUFFIX = {"pth": "pth", "h5": "h5", "safetensors": "safetensors", "spec": "json"}


# -- mutations shared by every format --------------------------------------------------------------

SPECIAL_BYTES = [np.float32(v).tobytes() for v in (np.nan, np.inf, -np.inf, -1.0, 3e38)] + [
    np.float64(np.nan).tobytes(), b"\xff" * 8, b"\x00" * 8, b"\x7f\xff\xff\xff"]
HOSTILE_VALUES = [0, -1, 1, 2**31, 2**48, 2**63, 10**30, 1e308, -1e308, float("nan"),
                  float("inf"), 0.5, True, False, None, "", "x", "../secret.json",
                  "/etc/passwd", [], {}, [1, 2, 3], {"a": 1}, [[[[[[[[[[[]]]]]]]]]]], "a" * 1000,
                  json.loads("[" * 600 + "]" * 600)]

positions = st.integers(0, 2**31)
overwrite = st.tuples(st.just("set"), positions, st.one_of(st.binary(min_size=1, max_size=8),
                                                           st.sampled_from(SPECIAL_BYTES)))
byte_edits = st.lists(st.one_of(
    overwrite, overwrite, overwrite,  # mostly in place: a shifted file rarely gets past its header
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), positions, st.integers(1, 4096)),
    st.tuples(st.just("truncate"), positions),
), max_size=3)
rarely = lambda edits: st.one_of(st.just([]), st.just([]), st.just([]), edits)  # noqa: E731
hostile_json = st.one_of(st.sampled_from(HOSTILE_VALUES), st.integers(), st.floats(),
                         st.text(max_size=20), st.lists(st.integers(-5, 10**6), max_size=5))


def _edit_bytes(data: bytes, edits) -> bytes:
    for kind, at, *argument in edits:
        at %= len(data) + 1
        if kind == "set":
            data = data[:at] + argument[0] + data[at + len(argument[0]):]
        elif kind == "insert":
            data = data[:at] + argument[0] + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + argument[0]:]
        else:
            data = data[:at]
    return data


def _json_paths(value, path=()) -> list[tuple]:
    """Every position in a JSON document, as a key path."""
    paths = [path]
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        paths.extend(_json_paths(child, (*path, key)))
    return paths


def _set_json(document, path: tuple, new):
    """``document`` with the value at ``path`` replaced (the root when ``path`` is empty), or
    unchanged when an earlier edit removed the path."""
    if not path:
        return new
    copy = json.loads(json.dumps(document))
    parent = copy
    try:
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = new
    except (KeyError, IndexError, TypeError):
        return document
    return copy


# -- .pth: pickle opcodes, storages and the archive ------------------------------------------------

with zipfile.ZipFile(hostile.TORCH_FIXTURE) as _archive:
    TORCH_MEMBERS = {info.filename: _archive.read(info) for info in _archive.infolist()}
PICKLE_NAME = next(name for name in TORCH_MEMBERS if name.endswith("/data.pkl"))
STORAGE_NAMES = sorted(name for name in TORCH_MEMBERS if "/data/" in name)
OPCODES = list(pickletools.genops(TORCH_MEMBERS[PICKLE_NAME]))
INT_OPCODES = [index for index, (op, _, _) in enumerate(OPCODES) if op.name in ("BININT1", "BININT2", "BININT")]
ALL_OPCODES = [op.code.encode("latin-1") for op in pickletools.opcodes]
SNIPPETS = [
    hostile.value((None, {"size": (1 << 20,), "stride": (1,)})) + b"b",  # BUILD on what precedes
    b"\x85" * 1000, b"r\xff\xff\xff\x0f", b"]q\x01h\x01a", b"0", b"2", b"(", b"t", b"N", b"R",
    b"s", b"u", b"e", b"a", b"Q", b"b", b"\x8e" + struct.pack("<Q", 1 << 40),
    b"\x96" + struct.pack("<Q", 1 << 40),
    hostile.global_("os", "system"), hostile.global_("torch._utils", "_rebuild_tensor_v2"),
    hostile.global_("torch", "FloatStorage"), hostile.global_("collections", "OrderedDict"),
    hostile.value(-1), hostile.value(2**63), hostile.value(1e300), hostile.value((0, 0, 0)),
]
EXTREME_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**48, 2**63, 10**30, True]

opcode_indices = st.integers(0, len(OPCODES) - 1)
pickle_edits = st.lists(st.one_of(
    st.tuples(st.just("opcode"), opcode_indices, st.sampled_from(ALL_OPCODES)),
    st.tuples(st.just("splice"), opcode_indices, st.sampled_from(SNIPPETS)),
    st.tuples(st.just("int"), st.sampled_from(INT_OPCODES), st.sampled_from(EXTREME_INTS)),
    st.tuples(st.just("cut"), opcode_indices, st.just(b"")),
), min_size=1, max_size=3)
storage_edits = st.lists(st.tuples(st.sampled_from(STORAGE_NAMES), positions, st.sampled_from(SPECIAL_BYTES)),
                         max_size=2)
pth_mutants = st.tuples(pickle_edits, rarely(storage_edits),
                        st.sampled_from([b"little"] * 6 + [b"big", b"", b"middle"]), rarely(byte_edits))


def _edit_pickle(data: bytes, edits) -> bytes:
    """Apply edits at opcode boundaries of the original pickle, last position first."""
    for kind, index, argument in sorted(edits, key=lambda edit: -OPCODES[edit[1]][2]):
        start = OPCODES[index][2]
        end = OPCODES[index + 1][2] if index + 1 < len(OPCODES) else len(data)
        if kind == "opcode":
            data = data[:start] + argument + data[start + 1:]
        elif kind == "splice":
            data = data[:start] + argument + data[start:]
        elif kind == "int":
            data = data[:start] + pickle.dumps(argument, protocol=2)[2:-1] + data[end:]
        else:
            data = data[:start]
    return data


def _pth(mutant) -> bytes:
    edits, storages, byteorder, raw = mutant
    members = dict(TORCH_MEMBERS)
    members[PICKLE_NAME] = _edit_pickle(members[PICKLE_NAME], edits)
    members[PICKLE_NAME.replace("data.pkl", "byteorder")] = byteorder
    for name, at, value in storages:
        members[name] = _edit_bytes(members[name], [("set", at, value)])
    with tempfile.SpooledTemporaryFile() as buffer:
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        buffer.seek(0)
        return _edit_bytes(buffer.read(), raw)


@given(st.lists(pth_mutants, min_size=FILES_PER_EXAMPLE, max_size=FILES_PER_EXAMPLE))
def test_mutated_pth_files(worker, mutants):
    _check(worker, "pth", [_pth(mutant) for mutant in mutants])


@pytest.fixture(scope="module")
def legacy_pth() -> bytes:
    """The fixture in torch's legacy (pre-1.6) stream format."""
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save(torch.load(hostile.TORCH_FIXTURE, weights_only=True), buffer,
               _use_new_zipfile_serialization=False)
    return buffer.getvalue()


@given(st.lists(byte_edits, min_size=FILES_PER_EXAMPLE, max_size=FILES_PER_EXAMPLE))
def test_mutated_legacy_pth_files(worker, legacy_pth, mutants):
    _check(worker, "pth", [_edit_bytes(legacy_pth, edits) for edits in mutants])


# -- Keras .h5: structure edited with h5py, then bytes ---------------------------------------------

with h5py.File(hostile.KERAS_FIXTURE) as _file:
    DATASETS = sorted(name for name, item in _file.items() if isinstance(item, h5py.Group)
                      for name in (f"{name}/{weight.decode()}" for weight in item.attrs["weight_names"]))
    LAYERS = sorted(name.decode() for name in _file.attrs["layer_names"])


def _unknown_filter(f, name, shape) -> None:
    """A dataset through filter 32015 (a plugin), marked optional so it can be written here."""
    from h5py import h5d, h5p, h5s, h5t, h5z

    plist = h5p.create(h5p.DATASET_CREATE)
    plist.set_chunk(shape)
    plist.set_filter(32015, h5z.FLAG_OPTIONAL)
    h5d.create(f.id, name.encode(), h5t.NATIVE_FLOAT, h5s.create_simple(shape), dcpl=plist)


def _h5_edit(f, kind: str, dataset: str, layer: str, value) -> None:
    if kind == "values":
        f[dataset][...] = value
        return
    if kind == "attribute":
        target = f if value[0] == "file" else f[layer]
        target.attrs["layer_names" if value[0] == "file" else "weight_names"] = value[1]
        return
    shape = f[dataset].shape
    del f[dataset]
    if kind == "group":
        f.create_group(dataset)
    elif kind == "soft link":
        f[dataset] = h5py.SoftLink(value)
    elif kind == "external link":
        f[dataset] = h5py.ExternalLink(value, "/x")
    elif kind == "external storage":
        f.create_dataset(dataset, shape=shape, dtype="f4", external=[(value, 0, 1 << 20)])
    elif kind == "dtype":
        f.create_dataset(dataset, shape=shape, dtype=value)
    elif kind == "shape":
        f.create_dataset(dataset, shape=value, dtype="f4", chunks=True, compression="gzip")
    elif kind == "empty":
        f.create_dataset(dataset, data=h5py.Empty("f4"))
    elif kind == "filter":
        _unknown_filter(f, dataset, shape or (1,))


h5_attribute_values = st.tuples(st.sampled_from(["file", "layer"]), st.sampled_from([
    b"Conv1", np.array([1, 2, 3]), np.array([b"\xff\xfe"]), np.array([[b"Conv1"]]), np.array([]),
    np.array([b""]), np.array([b"Conv1/../x"]), np.array([b"."]), np.array([b"/Conv1"]),
    np.array([b"Conv1"] * 5000)]))
h5_edits = st.lists(st.one_of(
    st.tuples(st.just("values"), st.sampled_from(DATASETS), st.sampled_from(LAYERS),
              st.sampled_from([np.nan, np.inf, -1.0, 1e30, 0.0])),
    st.tuples(st.just("attribute"), st.sampled_from(DATASETS), st.sampled_from(LAYERS), h5_attribute_values),
    st.tuples(st.sampled_from(["group", "empty", "filter"]), st.sampled_from(DATASETS), st.sampled_from(LAYERS),
              st.none()),
    st.tuples(st.just("soft link"), st.sampled_from(DATASETS), st.sampled_from(LAYERS),
              st.sampled_from(["/", "/Conv1", "/missing"])),
    st.tuples(st.sampled_from(["external link", "external storage"]), st.sampled_from(DATASETS),
              st.sampled_from(LAYERS), st.sampled_from([str(hostile.KERAS_FIXTURE), "missing.bin"])),
    st.tuples(st.just("dtype"), st.sampled_from(DATASETS), st.sampled_from(LAYERS),
              st.sampled_from(["S4", "i8", "f2", "f8", "c8", "u1", "?", h5py.string_dtype(),
                               np.dtype([("a", "f4"), ("b", "i4")])])),
    st.tuples(st.just("shape"), st.sampled_from(DATASETS), st.sampled_from(LAYERS),
              st.sampled_from([(), (0,), (1, 1, 1, 1, 1), (3_000_000_000,), (1 << 28,)])),
), max_size=2)


def _h5(mutant) -> bytes:
    edits, raw = mutant
    with tempfile.TemporaryDirectory() as folder:
        path = hostile.keras_copy(Path(folder) / "mutant.h5")
        with h5py.File(path, "r+") as f:
            for edit in edits:
                try:
                    _h5_edit(f, *edit)
                except (KeyError, AttributeError, TypeError, ValueError, OSError):
                    pass  # an earlier edit removed or replaced its target
        return _edit_bytes(path.read_bytes(), raw)


@given(st.lists(st.tuples(h5_edits, rarely(byte_edits)), min_size=FILES_PER_EXAMPLE, max_size=FILES_PER_EXAMPLE))
def test_mutated_keras_files(worker, mutants):
    _check(worker, "h5", [_h5(mutant) for mutant in mutants])


# -- model files: safetensors header fields and metadata, then bytes -------------------------------

def _model_file() -> bytes:
    model = nm.build_model("mobilenet_v1", depth_multiplier=0.25, input_size=32, num_classes=3, seed=0)
    model.preprocess = {"name": "test", "resize": 36, "crop": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    model.class_names = ["cat", "dog", "emu"]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        nm.save(model, path)
        return path.read_bytes()


MODEL_FILE = _model_file()
_HEADER_LENGTH = struct.unpack("<Q", MODEL_FILE[:8])[0]
HEADER = json.loads(MODEL_FILE[8:8 + _HEADER_LENGTH])
TENSORS = sorted(name for name in HEADER if name != "__metadata__")
METADATA = {key: json.loads(value) for key, value in HEADER["__metadata__"].items()
            if key not in ("format", "format_version")}
METADATA_PATHS = [(key, *path) for key, value in METADATA.items() for path in _json_paths(value)]

safetensors_edits = st.lists(st.one_of(
    st.tuples(st.just("tensor"), st.sampled_from(TENSORS), st.sampled_from(["shape", "dtype", "data_offsets"]),
              st.one_of(hostile_json, st.sampled_from(["F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3"]))),
    st.tuples(st.just("metadata"), st.sampled_from(METADATA_PATHS), st.none(), hostile_json),
    st.tuples(st.just("raw metadata"), st.sampled_from(["spec", "options", "preprocess", "classes", "format",
                                                        "format_version", "extra"]),
              st.none(), st.sampled_from(["", "{", "nan", "[" * 5000 + "]" * 5000, '"mobilenet_v1"', "1e999"])),
), min_size=1, max_size=3)


def _safetensors(mutant) -> bytes:
    edits, raw = mutant
    header = json.loads(json.dumps(HEADER))
    documents = json.loads(json.dumps(METADATA))
    for kind, target, field, value in edits:
        if kind == "tensor":
            header[target][field] = value
        elif kind == "metadata":
            documents[target[0]] = _set_json(documents[target[0]], target[1:], value)
        else:
            header["__metadata__"][target] = value
    for key, document in documents.items():
        if json.dumps(document) != json.dumps(METADATA[key]):
            header["__metadata__"][key] = json.dumps(document)
    encoded = json.dumps(header).encode()
    data = struct.pack("<Q", len(encoded)) + encoded + MODEL_FILE[8 + _HEADER_LENGTH:]
    return _edit_bytes(data, raw)


@given(st.lists(st.tuples(safetensors_edits, rarely(byte_edits)), min_size=FILES_PER_EXAMPLE,
                max_size=FILES_PER_EXAMPLE))
def test_mutated_model_files(worker, mutants):
    _check(worker, "safetensors", [_safetensors(mutant) for mutant in mutants])


# -- spec JSON: fields, then text ------------------------------------------------------------------

SPEC = json.loads(SPEC_FIXTURE.read_text())
SPEC_PATHS = _json_paths(SPEC)
spec_edits = st.lists(st.tuples(st.sampled_from(SPEC_PATHS), hostile_json), min_size=1, max_size=3)


def _spec(mutant) -> bytes:
    edits, raw = mutant
    document = SPEC
    for path, value in edits:
        document = _set_json(document, path, value)
    return _edit_bytes(json.dumps(document).encode(), raw)


@given(st.lists(st.tuples(spec_edits, rarely(byte_edits)), min_size=FILES_PER_EXAMPLE, max_size=FILES_PER_EXAMPLE))
def test_mutated_spec_files(worker, mutants):
    _check(worker, "spec", [_spec(mutant) for mutant in mutants])


def test_the_worker_reports_a_signal_death(worker, tmp_path):
    """The harness itself: a reader killed by a signal fails the test, naming the file."""
    path = tmp_path / "any.json"
    path.write_text("{}")
    os.kill(worker.process.pid, signal.SIGSEGV)
    with pytest.raises(pytest.fail.Exception, match=r"died \(signal SIGSEGV\) on one of .*any\.json"):
        worker.read("spec", [path])
    assert worker.read("spec", [path])[0]["documented"]  # restarted

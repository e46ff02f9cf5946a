"""Read CIFAR-10 in either official layout, without running anything from the files.

- ``cifar-10-batches-bin/``: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``,
  records of one label byte and 3,072 pixel bytes (1,024 red, then green, then blue, each 32x32
  row-major); class names one a line in ``batches.meta.txt``.
- ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
  ``batches.meta``, Python 2 pickles (protocol 2) of dicts with byte-string keys: ``data`` a
  ``(N, 3072)`` uint8 numpy array, ``labels`` a list of ints, ``batch_label`` and ``filenames``
  strings; the meta dict's ``label_names`` lists the classes.

The pickles are never given to :mod:`pickle`. :func:`_unpickle` is an interpreter of just the
opcodes those files use, whose only globals are ``numpy.core.multiarray._reconstruct``,
``numpy.ndarray`` and ``numpy.dtype``, and even these are never called: ``REDUCE`` on them makes
an inert stand-in, and ``BUILD`` turns the stand-in into a uint8 array of the bytes stored, after
checking its shape against them. Any other global or opcode is refused with
:class:`UnsafeCifarPickleError` before anything is built from it. Each file is read whole, at
most ``MAX_FILE_BYTES``; opcodes are counted against ``LIMITS["pickle_objects"]`` and nesting
against ``LIMITS["nesting_depth"]``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..validate import LIMITS

__all__ = ["CIFAR10_CLASSES", "Cifar10", "UnsafeCifarPickleError", "find_cifar10", "read_cifar10"]

SIDE, RECORD = 32, 32 * 32 * 3  # pixels per side, bytes per image
MAX_FILE_BYTES = 64 << 20  # an official batch is 31 MB
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
LAYOUTS = ("cifar-10-batches-bin", "cifar-10-batches-py")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")


class UnsafeCifarPickleError(ValueError):
    """The pickle holds something a CIFAR-10 batch does not; nothing from it was run."""


@dataclass
class Cifar10:
    """Images uint8 (N, 32, 32, 3) and labels int64 (N,) of both splits, and the class names."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]


def find_cifar10(root: os.PathLike | str) -> tuple[Path, str]:
    """The layout folder inside ``root`` (or ``root`` itself) and its kind, ``"bin"`` or ``"py"``;
    the binary layout is preferred when both are there."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such CIFAR-10 folder: {root}")
    for folder in (root / LAYOUTS[0], root / LAYOUTS[1], root):
        if (folder / "batches.meta.txt").is_file():
            return folder, "bin"
        if (folder / "batches.meta").is_file():
            return folder, "py"
    raise ValueError(f"{root}: no CIFAR-10 batches (expected {LAYOUTS[0]}/ with batches.meta.txt "
                     f"or {LAYOUTS[1]}/ with batches.meta, as the official archives unpack)")


def read_cifar10(root: os.PathLike | str) -> Cifar10:
    """Both splits of the CIFAR-10 layout found in ``root`` (see :func:`find_cifar10`)."""
    folder, kind = find_cifar10(root)
    read = _read_bin_batch if kind == "bin" else _read_py_batch
    names = _bin_class_names(folder) if kind == "bin" else _py_class_names(folder)
    suffix = ".bin" if kind == "bin" else ""
    train = [read(folder / (name + suffix), len(names)) for name in TRAIN_BATCHES]
    test_images, test_labels = read(folder / (TEST_BATCH + suffix), len(names))
    return Cifar10(np.concatenate([images for images, _ in train]),
                   np.concatenate([labels for _, labels in train]), test_images, test_labels, names)


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the CIFAR-10 folder")
    with open(path, "rb") as handle:
        raw = handle.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_FILE_BYTES} bytes; not a CIFAR-10 batch")
    return raw


def _images(pixels: np.ndarray) -> np.ndarray:
    """(N, 3072) channel-planar rows -> (N, 32, 32, 3)."""
    return np.ascontiguousarray(pixels.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1))


def _checked_labels(path: Path, labels: np.ndarray, num_classes: int) -> np.ndarray:
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"{path}: label {int(labels.max())} is beyond the {num_classes} classes")
    return labels.astype(np.int64)


def _class_list(path: Path, names) -> list[str]:
    if not (2 <= len(names) <= LIMITS["classes"]) or len(set(names)) != len(names):
        raise ValueError(f"{path}: expected distinct class names, got {len(names)} names "
                         f"({len(set(names))} distinct)")
    return names


# -- binary layout ----------------------------------------------------------------------------

def _bin_class_names(folder: Path) -> list[str]:
    path = folder / "batches.meta.txt"
    try:
        text = _read_file(path).decode("utf8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    return _class_list(path, [line.strip() for line in text.splitlines() if line.strip()])


def _read_bin_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    raw = _read_file(path)
    if not raw or len(raw) % (RECORD + 1):
        raise ValueError(f"{path}: {len(raw)} bytes is not a whole number of {RECORD + 1}-byte "
                         f"records (a label byte and a 32x32x3 image)")
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD + 1)
    return _images(records[:, 1:]), _checked_labels(path, records[:, 0], num_classes)


# -- python layout ----------------------------------------------------------------------------

def _py_class_names(folder: Path) -> list[str]:
    path = folder / "batches.meta"
    meta = _as_dict(path, _unpickle(_read_file(path), path))
    names = meta.get("label_names")
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) and n for n in names):
        raise ValueError(f"{path}: 'label_names' is not a list of class names")
    try:
        return _class_list(path, [n.decode("utf8") if isinstance(n, bytes) else n for n in names])
    except UnicodeDecodeError:
        raise ValueError(f"{path}: class names are not UTF-8") from None


def _read_py_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _as_dict(path, _unpickle(_read_file(path), path))
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != RECORD:
        raise ValueError(f"{path}: 'data' is not an (N, {RECORD}) uint8 array")
    if not isinstance(labels, list) or len(labels) != len(data) \
            or not all(type(label) is int and label >= 0 for label in labels):
        raise ValueError(f"{path}: 'labels' is not a list of {len(data)} class indices")
    return _images(data), _checked_labels(path, np.array(labels, np.int64), num_classes)


def _as_dict(path: Path, value) -> dict:
    """The unpickled dict with its byte-string keys as text."""
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(value).__name__}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: item for key, item in value.items()}


class _Mark:
    """The stack's MARK."""


class _Global:
    """An admitted global, by name; never called."""

    def __init__(self, name: str):
        self.name = name


_RECONSTRUCT, _NDARRAY, _DTYPE = _Global("_reconstruct"), _Global("ndarray"), _Global("dtype")
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTYPE,
}


class _ArrayStub:
    """What ``_reconstruct(ndarray, (0,), b'b')`` stands for until BUILD gives it its bytes."""

    array: np.ndarray | None = None


class _Uint8:
    """What ``dtype('u1', 0, 1)`` stands for: the only dtype a CIFAR batch stores."""


# numpy's pickled state of dtype('u1'); the byte-order mark is a str or, from Python 2, bytes
_UINT8_STATES = ((3, "|", None, None, None, -1, -1, 0), (3, b"|", None, None, None, -1, -1, 0))


class _Interpreter:
    """Runs the opcodes of a CIFAR-10 pickle on a stack; see the module docstring."""

    def __init__(self, raw: bytes, path: Path):
        self.raw, self.path, self.pos = raw, path, 0
        self.stack: list = []
        self.memo: dict[int, object] = {}
        self.depths: dict[int, int] = {}  # id of each list/tuple/dict built -> nesting depth

    def refuse(self, what: str):
        raise UnsafeCifarPickleError(
            f"{self.path}: refusing {what}: a CIFAR-10 batch holds only dicts, lists, strings, "
            f"numbers and uint8 arrays (unpickled by Python, this file could run code); nothing "
            f"from it was run")

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.raw):
            raise ValueError(f"{self.path}: truncated pickle")
        chunk = self.raw[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def number(self, fmt: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def line(self) -> str:
        end = self.raw.find(b"\n", self.pos, self.pos + 256)
        if end < 0:
            raise ValueError(f"{self.path}: malformed pickle (GLOBAL without a name)")
        text = self.take(end - self.pos + 1)[:-1]
        return text.decode("ascii", errors="replace")

    def pop(self):
        if not self.stack or self.stack[-1] is _MARK:
            raise ValueError(f"{self.path}: malformed pickle (empty stack)")
        return self.stack.pop()

    def pop_mark(self) -> list:
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index] is _MARK:
                items = self.stack[index + 1:]
                del self.stack[index:]
                return items
        raise ValueError(f"{self.path}: malformed pickle (no MARK)")

    def push_container(self, value, children) -> None:
        depth = 1 + max((self.depths.get(id(c), 0) for c in children), default=0)
        if depth > LIMITS["nesting_depth"]:
            raise ValueError(f"{self.path}: the pickle nests containers more than "
                             f"{LIMITS['nesting_depth']} deep (LIMITS['nesting_depth'])")
        self.depths[id(value)] = depth
        self.stack.append(value)

    def extend(self, items: list) -> None:
        target = self.stack[-1] if self.stack else None
        if type(target) is not list:
            raise ValueError(f"{self.path}: malformed pickle (APPEND to a non-list)")
        target.extend(items)
        self.depths[id(target)] = max([self.depths.get(id(target), 1)]
                                      + [self.depths.get(id(c), 0) + 1 for c in items])

    def set_items(self, items: list) -> None:
        target = self.stack[-1] if self.stack else None
        if type(target) is not dict or len(items) % 2:
            raise ValueError(f"{self.path}: malformed pickle (SETITEMS on a non-dict)")
        for key, value in zip(items[::2], items[1::2]):
            if type(key) not in (bytes, str, int):
                raise ValueError(f"{self.path}: a dict key is a {type(key).__name__}, not a string")
            target[key] = value

    def reduce(self) -> None:
        args, function = self.pop(), self.pop()
        if function is _RECONSTRUCT and args in ((_NDARRAY, (0,), b"b"), (_NDARRAY, (0,), "b")):
            self.stack.append(_ArrayStub())
        elif function is _DTYPE and type(args) is tuple and len(args) == 3 \
                and args[0] in ("u1", b"u1") and args[1:] in ((0, 1), (False, True)):
            self.stack.append(_Uint8())
        else:
            self.refuse(f"a call of {getattr(function, 'name', type(function).__name__)} with "
                        f"other arguments than numpy gives it for a uint8 array")

    def build(self) -> None:
        state, target = self.pop(), self.stack[-1] if self.stack else None
        if isinstance(target, _Uint8) and state in _UINT8_STATES:
            return
        if not isinstance(target, _ArrayStub) or target.array is not None:
            self.refuse(f"to set the state of a {type(target).__name__} (pickle BUILD)")
        if not (type(state) is tuple and len(state) == 5 and state[0] == 1
                and isinstance(state[2], _Uint8) and state[3] in (0, False)
                and isinstance(state[4], (bytes, str))):
            raise ValueError(f"{self.path}: an array's state is not that of a uint8 array")
        shape, raw = state[1], state[4]
        if not (type(shape) is tuple and len(shape) == 2 and all(type(n) is int and n >= 0 for n in shape)):
            raise ValueError(f"{self.path}: an array's shape is not two sizes")
        raw = raw.encode("latin1") if isinstance(raw, str) else raw
        if shape[0] * shape[1] != len(raw):
            raise ValueError(f"{self.path}: an array of shape {shape} stores {len(raw)} bytes")
        target.array = np.frombuffer(raw, np.uint8).reshape(shape)

    def run(self):
        ops = 0
        while True:
            ops += 1
            if ops > LIMITS["pickle_objects"]:
                raise ValueError(f"{self.path}: the pickle runs more than {LIMITS['pickle_objects']} "
                                 f"opcodes (LIMITS['pickle_objects'])")
            code = self.take(1)
            handler = _OPCODES.get(code)
            if handler is None:
                self.refuse(f"pickle opcode {code!r}")
            if handler(self) is _STOP:
                value = self.pop()
                if isinstance(value, dict):
                    return {key: self.array(item) for key, item in value.items()}
                return self.array(value)

    def array(self, value):
        """A built array for its stand-in; other values as they are."""
        if not isinstance(value, _ArrayStub):
            return value
        if value.array is None:
            raise ValueError(f"{self.path}: an array is never given its data (no BUILD)")
        return value.array


_MARK, _STOP = _Mark(), object()


def _global(vm: _Interpreter) -> None:
    module, name = vm.line(), vm.line()
    admitted = _GLOBALS.get((module, name))
    if admitted is None:
        vm.refuse(f"the global {module}.{name}")
    vm.stack.append(admitted)


def _tuple_of(count: int):
    def load(vm: _Interpreter) -> None:
        items = [vm.pop() for _ in range(count)][::-1]
        vm.push_container(tuple(items), items)
    return load


def _memo_put(fmt: str):
    def load(vm: _Interpreter) -> None:
        if not vm.stack:
            raise ValueError(f"{vm.path}: malformed pickle (PUT on an empty stack)")
        vm.memo[vm.number(fmt)] = vm.stack[-1]
    return load


def _memo_get(fmt: str):
    def load(vm: _Interpreter) -> None:
        index = vm.number(fmt)
        if index not in vm.memo:
            raise ValueError(f"{vm.path}: malformed pickle (GET of an unset memo slot)")
        vm.stack.append(vm.memo[index])
    return load


def _string(fmt: str, text: bool):
    def load(vm: _Interpreter) -> None:
        raw = vm.take(vm.number(fmt))
        if text:
            try:
                raw = raw.decode("utf8")
            except UnicodeDecodeError:
                raise ValueError(f"{vm.path}: malformed pickle (a text string is not UTF-8)") from None
        vm.stack.append(raw)
    return load


def _constant(value):
    def load(vm: _Interpreter) -> None:
        vm.stack.append(value)
    return load


def _integer(fmt: str):
    def load(vm: _Interpreter) -> None:
        vm.stack.append(vm.number(fmt))
    return load


def _set_item(vm: _Interpreter) -> None:
    value = vm.pop()
    vm.set_items([vm.pop(), value])


def _memoize(vm: _Interpreter) -> None:
    if not vm.stack:
        raise ValueError(f"{vm.path}: malformed pickle (MEMOIZE on an empty stack)")
    vm.memo[len(vm.memo)] = vm.stack[-1]


def _proto(vm: _Interpreter) -> None:
    if vm.number("<B") > 5:
        raise ValueError(f"{vm.path}: unknown pickle protocol")


_OPCODES = {
    b"\x80": _proto,
    b"\x95": lambda vm: vm.take(8),  # FRAME: a length hint only
    b".": lambda vm: _STOP,
    b"(": lambda vm: vm.stack.append(_MARK),
    b"}": lambda vm: vm.push_container({}, ()),
    b"]": lambda vm: vm.push_container([], ()),
    b")": lambda vm: vm.push_container((), ()),
    b"t": lambda vm: (lambda items: vm.push_container(tuple(items), items))(vm.pop_mark()),
    b"\x85": _tuple_of(1),
    b"\x86": _tuple_of(2),
    b"\x87": _tuple_of(3),
    b"l": lambda vm: (lambda items: vm.push_container(list(items), items))(vm.pop_mark()),
    b"a": lambda vm: vm.extend([vm.pop()]),
    b"e": lambda vm: vm.extend(vm.pop_mark()),
    b"s": _set_item,
    b"u": lambda vm: vm.set_items(vm.pop_mark()),
    b"q": _memo_put("<B"),
    b"r": _memo_put("<I"),
    b"\x94": _memoize,
    b"h": _memo_get("<B"),
    b"j": _memo_get("<I"),
    b"U": _string("<B", text=False),  # SHORT_BINSTRING: a Python 2 str, read as bytes
    b"T": _string("<I", text=False),  # BINSTRING
    b"C": _string("<B", text=False),  # SHORT_BINBYTES
    b"B": _string("<I", text=False),  # BINBYTES
    b"\x8c": _string("<B", text=True),  # SHORT_BINUNICODE
    b"X": _string("<I", text=True),  # BINUNICODE
    b"K": _integer("<B"),
    b"M": _integer("<H"),
    b"J": _integer("<i"),
    b"N": _constant(None),
    b"\x88": _constant(True),
    b"\x89": _constant(False),
    b"c": _global,
    b"R": _Interpreter.reduce,
    b"b": _Interpreter.build,
}


def _unpickle(raw: bytes, path: Path):
    """The value a CIFAR-10 pickle holds; see the module docstring for what is admitted."""
    return _Interpreter(raw, path).run()

"""Write a small CIFAR-10 in both official layouts, for the reader and training tests.

    python scripts/make_cifar_fixtures.py [OUTDIR]        # default tests/fixtures/cifar10

makes ``OUTDIR/cifar-10-batches-bin/`` (``data_batch_1.bin`` .. ``data_batch_5.bin``,
``test_batch.bin``, ``batches.meta.txt``) and ``OUTDIR/cifar-10-batches-py/`` (``data_batch_1``
.. ``data_batch_5``, ``test_batch``, ``batches.meta``) holding the same images: TRAIN_PER_BATCH
images per training batch and TEST_IMAGES test images, 32x32, labelled with CIFAR-10's ten class
names. The images are synthetic (no download): a disc of the class's colour, of random size and
place, on a random colour gradient, so a network learns them within a few epochs.

The Python layout is written byte for byte as the official archive's Python 2 ``cPickle``
(protocol 2) wrote it: dicts with byte-string keys, ``data`` a uint8 numpy array pickled through
``numpy.core.multiarray._reconstruct``, ``labels`` a list of ints, ``batch_label`` and
``filenames`` byte strings. The encoder is here (not ``pickle.dumps``, which writes Python 3's
forms) so the fixtures have exactly the opcodes the real files have. Deterministic: rerunning
gives identical files (a test checks the committed ones against this script).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [128, 128, 0], [255, 255, 255]])
TRAIN_PER_BATCH, TEST_IMAGES, SEED = 60, 100, 10
SIDE = 32


def images(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` synthetic images uint8 (N, 32, 32, 3) and their labels, every class in turn."""
    labels = np.arange(count) % len(CLASSES)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1)
    out = np.empty((count, SIDE, SIDE, 3), np.uint8)
    for i, label in enumerate(labels):
        corners = rng.uniform(0, 160, (2, 3))
        background = corners[0] * (1 - yy[..., None]) + corners[1] * xx[..., None]
        cy, cx = rng.uniform(8, 24, 2)
        radius = rng.uniform(5, 11)
        disc = (yy * (SIDE - 1) - cy) ** 2 + (xx * (SIDE - 1) - cx) ** 2 <= radius ** 2
        colour = np.clip(PALETTE[label] + rng.uniform(-25, 25, 3), 0, 255)
        out[i] = np.where(disc[..., None], colour, background).round().astype(np.uint8)
    return out, labels


def planar(batch: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072) rows: red plane, green plane, blue plane, each row-major."""
    return batch.transpose(0, 3, 1, 2).reshape(len(batch), -1)


class Py2Pickle:
    """The opcodes Python 2's cPickle (protocol 2) writes for the CIFAR-10 dicts."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = 0

    def put(self) -> None:
        self.memo += 1
        self.out += b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)

    def string(self, raw: bytes) -> None:  # a Python 2 str
        self.out += (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<I", len(raw))) + raw
        self.put()

    def integer(self, value: int) -> None:
        if value < 256:
            self.out += b"K" + bytes([value])
        elif value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        else:
            self.out += b"J" + struct.pack("<i", value)

    def global_(self, module: str, name: str) -> None:
        self.out += b"c" + f"{module}\n{name}\n".encode()
        self.put()

    def uint8_array(self, array: np.ndarray) -> None:
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.integer(0)
        self.out += b"\x85"
        self.put()
        self.string(b"b")
        self.out += b"\x87"
        self.put()
        self.out += b"R"
        self.put()
        self.out += b"("
        self.integer(1)
        for n in array.shape:
            self.integer(n)
        self.out += b"\x86"
        self.put()
        self.global_("numpy", "dtype")
        self.string(b"u1")
        self.integer(0)
        self.integer(1)
        self.out += b"\x87"
        self.put()
        self.out += b"R"
        self.put()
        self.out += b"("
        self.integer(3)
        self.string(b"|")
        self.out += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
        self.integer(0)
        self.out += b"t"
        self.put()
        self.out += b"b\x89"
        self.string(np.ascontiguousarray(array, np.uint8).tobytes())
        self.out += b"t"
        self.put()
        self.out += b"b"

    def value(self, value) -> None:
        if isinstance(value, bytes):
            self.string(value)
        elif isinstance(value, int):
            self.integer(value)
        elif isinstance(value, np.ndarray):
            self.uint8_array(value)
        elif isinstance(value, list):
            self.out += b"]"
            self.put()
            if value:
                self.out += b"("
                for item in value:
                    self.value(item)
                self.out += b"e"
        else:
            raise TypeError(type(value))

    def dict(self, items: dict[bytes, object]) -> bytes:
        self.out += b"}"
        self.put()
        self.out += b"("
        for key, value in items.items():
            self.string(key)
            self.value(value)
        self.out += b"u."
        return bytes(self.out)


def write(out: Path) -> None:
    rng = np.random.default_rng(SEED)
    batches = [(f"data_batch_{i}", f"training batch {i} of 5", *images(TRAIN_PER_BATCH, rng))
               for i in range(1, 6)]
    batches.append(("test_batch", "testing batch 1 of 1", *images(TEST_IMAGES, rng)))
    binary, python = out / "cifar-10-batches-bin", out / "cifar-10-batches-py"
    binary.mkdir(parents=True, exist_ok=True)
    python.mkdir(parents=True, exist_ok=True)
    (binary / "batches.meta.txt").write_text("".join(f"{name}\n" for name in CLASSES) + "\n")
    (python / "batches.meta").write_bytes(Py2Pickle().dict({
        b"num_cases_per_batch": TRAIN_PER_BATCH,
        b"label_names": [name.encode() for name in CLASSES],
        b"num_vis": SIDE * SIDE * 3}))
    for name, label, batch, labels in batches:
        rows = planar(batch)
        records = np.concatenate([labels[:, None].astype(np.uint8), rows], axis=1)
        (binary / f"{name}.bin").write_bytes(records.tobytes())
        filenames = [f"{CLASSES[y]}_s_{i:06d}.png".encode() for i, y in enumerate(labels)]
        (python / name).write_bytes(Py2Pickle().dict({
            b"data": rows, b"labels": [int(y) for y in labels], b"batch_label": label.encode(),
            b"filenames": filenames}))


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "tests/fixtures/cifar10")

"""Datasets, transforms and a batch loader producing float32 NHWC batches.

A dataset is anything with ``len()``, ``load(index) -> (Pillow image, label)``, ``labels()``
(int64, one per sample), ``class_indices`` ({class name: label}) and ``subset(indices)``:

- ``ImageFolder``: one subfolder per class (the flower-folder layout).
  :func:`check_trainable` refuses data a classifier cannot learn from (one class, a class with
  a single image to split), saying why.
- ``ArrayImages``: images already in memory, a uint8 NumPy array (N, H, W, 3) with integer
  labels and the class names, e.g. ``ArrayImages(x_train, y_train, {"cat": 0, "dog": 1})``.
- ``digits``: scikit-learn's handwritten digits (1,797 8x8 images, 10 classes) upscaled to RGB,
  the built-in quickstart data (``--data builtin:digits``).
- ``cifar10``: CIFAR-10 from either official layout (``--data cifar10:DIR``; see
  :mod:`npmobilenet.io.cifar`), its class names from the meta file.
- Transforms take a Pillow image and a NumPy Generator: ``TrainTransform`` (random resized crop,
  horizontal flip, normalise) and ``EvalTransform`` (resize, centre crop, normalise) follow the
  preprocessing presets of :mod:`npmobilenet.io.preprocess`.
- ``Loader``: seeded shuffling, where epoch ``e``'s order and augmentations depend only on
  ``(seed, e, index)``, so a resumed run sees exactly the batches an uninterrupted one would.
  As with a torch ``DataLoader``, each ``for x, y in loader`` pass is the next epoch;
  ``set_epoch(e)`` chooses the epoch of the next pass (exact resume), ``epoch(e)`` iterates a
  given one. Images are decoded in background threads (Pillow releases the GIL) one batch
  ahead, so the kernels do not wait on decoding. Unreadable images are skipped with a warning
  and counted. ``batches(e, rank, size)`` gives process ``rank`` of ``size`` its share of
  every batch with the samples' indices (data-parallel training).
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import validate
from .distributed import share
from .io.cifar import read_cifar10
from .io.preprocess import open_image, preprocess_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_WORKERS = 64  # image decoding threads of one Loader


class ImageFolder:
    """``root/<class name>/<image>``; classes sorted by name get labels 0..K-1, or those of
    ``class_indices`` (a model's classes), which must then name every class folder."""

    def __init__(self, root: os.PathLike | str, class_indices: dict[str, int] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no such data folder: {self.root}")
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if class_indices is None:
            if not folders:
                raise ValueError(f"{self.root}: expected one subfolder per class, found none")
            class_indices = {name: i for i, name in enumerate(folders)}
        unknown = [name for name in folders if name not in class_indices]
        if unknown:
            raise ValueError(f"{self.root}: class folders {unknown} are not among the model's "
                             f"classes {validate.show(sorted(class_indices))}")
        self.class_indices = dict(class_indices)
        self.samples = [(path, self.class_indices[name]) for name in folders
                        for path in sorted((self.root / name).iterdir())
                        if path.suffix.lower() in IMAGE_EXTENSIONS]
        if not self.samples:
            raise ValueError(f"{self.root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders")

    def __len__(self) -> int:
        return len(self.samples)

    def labels(self) -> np.ndarray:
        return np.array([label for _, label in self.samples], dtype=np.int64)

    def load(self, index: int):
        """The Pillow image (RGB, upright, 8-bit: see :func:`open_image`) and label of sample
        ``index``; raises ValueError if unreadable."""
        path, label = self.samples[index]
        return open_image(path), label

    def subset(self, indices) -> "Subset":
        return Subset(self, indices)


class ArrayImages:
    """Images held in memory: uint8 (N, H, W, 3), integer labels (N,) in ``[0, K)`` and the
    class names as ``{name: label}``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_indices: dict[str, int]):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"images: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if labels.dtype.kind not in "iu" or labels.shape != images.shape[:1]:
            raise ValueError(f"labels: expected {len(images)} integer labels, got {labels.dtype} "
                             f"{labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_indices)):
            raise ValueError(f"labels: expected values in [0, {len(class_indices)}), one per class "
                             f"name, got [{labels.min()}, {labels.max()}]")
        self.images, self.targets, self.class_indices = images, labels.astype(np.int64), dict(class_indices)

    def __len__(self) -> int:
        return len(self.images)

    def labels(self) -> np.ndarray:
        return self.targets

    def load(self, index: int):
        from PIL import Image
        return Image.fromarray(self.images[index]), int(self.targets[index])

    def subset(self, indices) -> "Subset":
        return Subset(self, indices)


class Subset:
    """A view of another dataset restricted to ``indices``."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        self.class_indices = dataset.class_indices

    def __len__(self) -> int:
        return len(self.indices)

    def labels(self) -> np.ndarray:
        return self.dataset.labels()[self.indices]

    def load(self, index: int):
        return self.dataset.load(int(self.indices[index]))

    def subset(self, indices) -> "Subset":
        return Subset(self.dataset, self.indices[np.asarray(indices, dtype=np.int64)])


def digits(size: int = 32, class_indices: dict[str, int] | None = None) -> ArrayImages:
    """scikit-learn's 1,797 handwritten digits, 8x8 grey upscaled (bilinear) to ``size`` RGB.

    Digit ``d`` is class ``"d"`` with label ``d``, or label ``class_indices["d"]`` (a model's
    classes), which must then name every digit.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError("builtin:digits needs scikit-learn: pip install 'npmobilenet[quickstart]'") from None
    from PIL import Image

    raw = load_digits()
    grey = (raw.images * (255 / 16)).round().astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.Resampling.BILINEAR))
                       for g in grey])
    labels, names = raw.target, {str(d): d for d in range(10)}
    if class_indices is not None:
        unknown = [name for name in names if name not in class_indices]
        if unknown:
            raise ValueError(f"builtin:digits: classes {unknown} are not among the model's classes "
                             f"{validate.show(sorted(class_indices))}")
        labels, names = np.array([class_indices[str(d)] for d in labels]), dict(class_indices)
    return ArrayImages(np.repeat(images[..., None], 3, axis=3), labels, names)


def cifar10(root: os.PathLike | str, class_indices: dict[str, int] | None = None
            ) -> tuple[ArrayImages, ArrayImages]:
    """The (training, test) splits of the CIFAR-10 in ``root`` (either official layout; see
    :func:`npmobilenet.io.cifar.read_cifar10`), labelled by the meta file's class names, or by
    ``class_indices`` (a model's classes), which must then name every class."""
    data = read_cifar10(root)
    names = {name: i for i, name in enumerate(data.class_names)}
    remap = np.arange(len(names))
    if class_indices is not None:
        unknown = [name for name in names if name not in class_indices]
        if unknown:
            raise ValueError(f"{root}: CIFAR-10 classes {unknown} are not among the model's classes "
                             f"{validate.show(sorted(class_indices))}")
        remap = np.array([class_indices[name] for name in data.class_names])
        names = dict(class_indices)
    return (ArrayImages(data.train_images, remap[data.train_labels], names),
            ArrayImages(data.test_images, remap[data.test_labels], names))


def class_index(names, source: str) -> dict[str, int]:
    """``{name: index}`` for class names in index order; refuses non-strings and duplicates."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{source}: expected a list of non-empty class names, got {validate.show(names)}")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"{source}: class names {duplicates} appear more than once")
    return {name: i for i, name in enumerate(names)}


def check_trainable(dataset, source: str, held_out: bool) -> None:
    """Refuse data a classifier cannot be trained on, saying why: fewer than two classes, a class
    with no images, or, when ``held_out`` splits validation images off, a class of one image
    (it would leave the class out of training)."""
    names = sorted(dataset.class_indices, key=dataset.class_indices.get)
    if len(names) < 2:
        raise ValueError(f"{source}: only one class folder ({names[0]}); training a classifier "
                         f"needs at least two")
    counts = np.bincount(dataset.labels(), minlength=len(names))
    empty = [name for name, count in zip(names, counts) if count == 0]
    if empty:
        raise ValueError(f"{source}: class folders {empty} hold no images; every class needs "
                         f"images to train on")
    single = [name for name, count in zip(names, counts) if count == 1]
    if held_out and single:
        raise ValueError(f"{source}: classes {single} have only one image; holding out a "
                         f"validation split needs at least two per class (one to train on, one "
                         f"to validate), or give a --val folder")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held-out) holding out ``fraction`` of every class (at least one image
    each), seeded."""
    validate.number("val_split", fraction, 0.0, 1.0, low_open=True, high_open=True)
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = max(1, int(round(len(members) * fraction)))
        held.extend(members[:cut])
        train.extend(members[cut:])
    return np.sort(np.array(train, np.int64)), np.sort(np.array(held, np.int64))


class EvalTransform:
    """Resize the shorter side, centre-crop and normalise, as the preset says."""

    def __init__(self, preset: dict):
        self.preset = preset

    def __call__(self, image, rng) -> np.ndarray:
        return preprocess_image(image, self.preset)


class TrainTransform:
    """Random resized crop (area fraction ``scale``, aspect ``ratio``), optional horizontal flip,
    then the preset's normalisation, at the preset's crop size."""

    def __init__(self, preset: dict, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True):
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale: expected 0 < low <= high <= 1, got {scale}")
        self.preset, self.scale, self.ratio, self.flip = preset, scale, ratio, flip

    def _box(self, width, height, rng):
        area = width * height
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left, top = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
                return left, top, left + w, top + h
        side = min(width, height)  # fall back to the central square
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side

    def __call__(self, image, rng) -> np.ndarray:
        from PIL import Image

        crop = self.preset["crop"]
        image = image.crop(self._box(*image.size, rng)).resize((crop, crop), Image.Resampling.BILINEAR)
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = np.asarray(image, np.float32) / np.float32(255)
        return (x - np.asarray(self.preset["mean"], np.float32)) / np.asarray(self.preset["std"], np.float32)


class Epochs:
    """Iterating is the next epoch, as with torch's loaders: passes give epochs 0, 1, 2, ...;
    ``set_epoch(e)`` makes the next pass epoch ``e`` (what a resumed run calls), as torch's
    ``DistributedSampler.set_epoch``.

    Subclasses define ``chunks(e)``, the sample indices of each batch of epoch ``e``, and
    ``_loaded(parts, e)``, each part's samples in turn as (x, y, readable indices), or None
    when none is readable. ``batches`` then gives one process's share of every batch
    (data-parallel training); ``epoch`` the whole batches.
    """

    next_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.next_epoch = validate.integer("epoch", epoch, 0)

    def __iter__(self):
        epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
        return self.epoch(epoch)

    def epoch(self, epoch: int = 0):
        """The batches (x, y) of epoch ``epoch``, whatever pass this is; a batch with no
        readable sample is left out."""
        for _, x, y in self.batches(epoch):
            if x is not None:
                yield x, y

    def batches(self, epoch: int = 0, rank: int = 0, size: int = 1):
        """Process ``rank`` of ``size``'s share of each batch of epoch ``epoch`` (see
        :func:`npmobilenet.distributed.share`): (sample indices, x, y) of its readable
        samples, x None when there is none (so that every process sees every step)."""
        parts = [chunk[share(len(chunk), rank, size)] for chunk in self.chunks(epoch)]
        for indices, loaded in zip(parts, self._loaded(parts, epoch)):
            if loaded is None:
                yield indices[:0], None, np.zeros(0, np.int64)
            else:
                x, y, readable = loaded
                yield readable, x, y


class Loader(Epochs):
    """Batches of (x float32 (B, H, W, 3), y int64 (B,)) from a dataset and a transform.

    Each pass (``for x, y in loader``) is the next epoch (see :class:`Epochs`); ``epoch(e)``
    iterates epoch ``e``: shuffled by ``(seed, e)`` when ``shuffle``, each sample
    transformed with a Generator seeded by ``(seed, e, index)``. A final batch of one sample
    joins the batch before it (batch norm cannot train on a single value per channel).
    ``workers`` (at least 1) threads decode images, one batch ahead. ``skipped`` counts
    unreadable images met so far.
    """

    def __init__(self, dataset, transform, batch_size: int, shuffle: bool = False, seed: int = 0,
                 workers: int = 2, drop_last: bool = False):
        self.dataset, self.transform = dataset, transform
        self.batch_size = validate.integer("batch_size", batch_size, 1)
        self.workers = validate.integer("workers", workers, 1, MAX_WORKERS)
        self.seed = validate.integer("seed", seed, 0)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.skipped = 0
        self._warned: set[int] = set()

    def __len__(self) -> int:
        full, rest = divmod(len(self.dataset), self.batch_size)
        if self.drop_last or rest == 0 or (rest == 1 and full):
            return full
        return full + 1

    def order(self, epoch: int) -> np.ndarray:
        count = len(self.dataset)
        return np.random.default_rng([self.seed, epoch]).permutation(count) if self.shuffle else np.arange(count)

    def chunks(self, epoch: int) -> list[np.ndarray]:
        """The sample indices of each batch of epoch ``epoch``."""
        order = self.order(epoch)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        chunks = [order[i:i + self.batch_size] for i in range(0, stop, self.batch_size)]
        if len(chunks) > 1 and len(chunks[-1]) == 1:
            chunks[-2:] = [np.concatenate(chunks[-2:])]
        return chunks

    def _sample(self, index: int, epoch: int):
        try:
            image, label = self.dataset.load(index)
        except ValueError as error:
            return error
        return self.transform(image, np.random.default_rng([self.seed, epoch, index])), label

    def _batch(self, pool, indices, epoch):
        results = list(pool.map(lambda i: self._sample(int(i), epoch), indices))
        good = [(int(index), r) for index, r in zip(indices, results) if not isinstance(r, Exception)]
        for index, r in zip(indices, results):
            if isinstance(r, Exception):
                self.skipped += 1
                if int(index) not in self._warned:
                    self._warned.add(int(index))
                    warnings.warn(f"skipping unreadable image: {r}", stacklevel=3)
        if not good:
            return None
        return (np.stack([x for _, (x, _) in good]).astype(np.float32, copy=False),
                np.array([y for _, (_, y) in good], np.int64), np.array([i for i, _ in good], np.int64))

    def _loaded(self, parts, epoch):
        """Decode in ``workers`` threads, the next part while the current one is used."""
        with ThreadPoolExecutor(self.workers) as pool, ThreadPoolExecutor(1) as ahead:
            pending = ahead.submit(self._batch, pool, parts[0], epoch) if parts else None
            for k in range(len(parts)):
                loaded = pending.result()
                pending = ahead.submit(self._batch, pool, parts[k + 1], epoch) if k + 1 < len(parts) else None
                yield loaded

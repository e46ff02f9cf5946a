"""Class names for predictions: the model's own, a user file, or the ImageNet names shipped with
the package.

``imagenet_classes.txt`` holds the 1000 ImageNet-1k class names, one a line, in the standard
index order (the order of torchvision's and Keras's 1000-class heads). TF-slim checkpoints have
1001 classes with ``background`` at index 0. Converted 1000- and 1001-class models store these
names; trained models store their folders' names (``model.class_names``).

Label files come from users and strangers: they are read up to ``MAX_LABELS_BYTES``.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from .. import validate

__all__ = ["MAX_LABELS_BYTES", "class_names", "imagenet_classes", "model_class_names",
           "read_class_indices"]

MAX_LABELS_BYTES = 16 << 20  # a labels.txt or class_indices.json


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names."""
    text = (resources.files("npmobilenet.io") / "imagenet_classes.txt").read_text(encoding="utf8")
    return text.splitlines()


def _read_text(path: os.PathLike | str, what: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such {what}: {path}")
    with open(path, "rb") as handle:
        raw = handle.read(MAX_LABELS_BYTES + 1)
    if len(raw) > MAX_LABELS_BYTES:
        raise ValueError(f"{path}: larger than {MAX_LABELS_BYTES} bytes; not a {what}")
    try:
        return raw.decode("utf8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; not a {what}") from None


def class_names(num_classes: int, labels_file: os.PathLike | str | None = None) -> list[str]:
    """Names for a head of ``num_classes`` outputs.

    ``labels_file`` (one name a line, blank lines ignored) must hold exactly ``num_classes``
    names. Without it: ImageNet names for 1000 classes, ``background`` + ImageNet for 1001, and
    ``class <i>`` otherwise.
    """
    if labels_file is not None:
        text = _read_text(labels_file, "labels file")
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if len(names) != num_classes:
            raise ValueError(f"labels: {labels_file} has {len(names)} names, the model "
                             f"{num_classes} classes")
        return names
    if num_classes == 1000:
        return imagenet_classes()
    if num_classes == 1001:
        return ["background", *imagenet_classes()]
    return [f"class {i}" for i in range(num_classes)]


def read_class_indices(path: os.PathLike | str, num_classes: int) -> list[str]:
    """The class names, in index order, of a ``class_indices.json`` (``{name: index}``) for a
    model of ``num_classes`` outputs: every index in ``[0, num_classes)`` exactly once."""
    try:
        mapping = json.loads(_read_text(path, "class index"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON class index ({error})") from None
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: expected an object {{class name: index}}, got {validate.show(mapping)}")
    names: list[str | None] = [None] * num_classes
    for name, index in mapping.items():
        index = validate.integer(f"{path}: index of {name!r}", index, 0, num_classes - 1)
        if names[index] is not None:
            raise ValueError(f"{path}: index {index} is given to both {names[index]!r} and {name!r}")
        names[index] = name
    missing = [i for i, name in enumerate(names) if name is None]
    if missing:
        raise ValueError(f"{path}: no class name for indices {validate.show(missing)} of the "
                         f"model's {num_classes} classes")
    return names


def model_class_names(model, weights: os.PathLike | str, labels_file: os.PathLike | str | None = None,
                      required: bool = False) -> list[str]:
    """The class names of a model loaded from ``weights``, in index order: ``labels_file`` if
    given, else the names the model file stores, else a ``class_indices.json`` beside it (as
    older training runs left them). Past those, ``required`` refuses (a score against unknown
    names would be silently wrong); otherwise :func:`class_names`' defaults."""
    num_classes = model.graph.options.num_classes
    if labels_file is not None:
        return class_names(num_classes, labels_file)
    if model.class_names is not None:
        return list(model.class_names)
    beside = Path(weights).parent / "class_indices.json"
    if beside.exists():
        return read_class_indices(beside, num_classes)
    if required:
        raise ValueError(f"{weights}: the model file stores no class names, so its outputs cannot "
                         f"be matched to class folders; give them with --labels FILE (one a line, in "
                         f"index order)")
    return class_names(num_classes)

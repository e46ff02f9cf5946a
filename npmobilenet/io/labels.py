"""Class names for predictions: the ImageNet names shipped with the package, or a user file.

``imagenet_classes.txt`` holds the 1000 ImageNet-1k class names, one a line, in the standard
index order (the order of torchvision's and Keras's 1000-class heads). TF-slim checkpoints have
1001 classes with ``background`` at index 0.
"""

from __future__ import annotations

import os
from importlib import resources

__all__ = ["imagenet_classes", "class_names"]


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names."""
    text = (resources.files("npmobilenet.io") / "imagenet_classes.txt").read_text(encoding="utf8")
    return text.splitlines()


def class_names(num_classes: int, labels_file: os.PathLike | str | None = None) -> list[str]:
    """Names for a head of ``num_classes`` outputs.

    ``labels_file`` (one name a line, blank lines ignored) must hold exactly ``num_classes``
    names. Without it: ImageNet names for 1000 classes, ``background`` + ImageNet for 1001, and
    ``class <i>`` otherwise.
    """
    if labels_file is not None:
        if not os.path.exists(labels_file):
            raise FileNotFoundError(f"no such labels file: {labels_file}")
        with open(labels_file, encoding="utf8") as handle:
            names = [line.strip() for line in handle if line.strip()]
        if len(names) != num_classes:
            raise ValueError(f"labels: {labels_file} has {len(names)} names, the model "
                             f"{num_classes} classes")
        return names
    if num_classes == 1000:
        return imagenet_classes()
    if num_classes == 1001:
        return ["background", *imagenet_classes()]
    return [f"class {i}" for i in range(num_classes)]

"""Image preprocessing presets tied to the weights' origin, and Pillow decoding.

A preset is a small JSON-able dict stored in the model file:
``{"name", "resize", "crop", "mean", "std"}``. The image is decoded to RGB, its shorter side
resized to ``resize`` (bilinear), centre-cropped to ``crop`` x ``crop``, scaled to [0, 1], then
normalised per channel: ``(x - mean) / std``.

- ``torchvision``: resize 256, crop 224, ImageNet mean/std.
- ``keras`` (Keras / TF-slim): the same 87.5% central crop, then ``x / 127.5 - 1`` (mean = std = 0.5).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["PRESETS", "preset", "validate_preset", "load_image", "preprocess_image"]

PRESETS = {
    "torchvision": {"name": "torchvision", "resize": 256, "crop": 224,
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "keras": {"name": "keras", "resize": 256, "crop": 224,
              "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
}


def preset(name: str) -> dict:
    """A copy of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"preprocess: unknown preset {name!r} (one of {', '.join(PRESETS)})")
    return {key: (list(value) if isinstance(value, list) else value)
            for key, value in PRESETS[name].items()}


def validate_preset(p) -> dict:
    """Check a preset read from a file; returns it. Raises ValueError naming the bad field."""
    if not isinstance(p, dict):
        raise ValueError(f"preprocess: expected an object, got {type(p).__name__}")
    for key in ("resize", "crop"):
        if not isinstance(p.get(key), int) or isinstance(p.get(key), bool) or p[key] <= 0:
            raise ValueError(f"preprocess.{key}: expected a positive integer, got {p.get(key)!r}")
    if p["crop"] > p["resize"]:
        raise ValueError(f"preprocess: crop {p['crop']} is larger than resize {p['resize']}")
    for key in ("mean", "std"):
        value = p.get(key)
        if not (isinstance(value, list) and len(value) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise ValueError(f"preprocess.{key}: expected 3 numbers, got {value!r}")
    if any(v <= 0 for v in p["std"]):
        raise ValueError(f"preprocess.std: must be positive, got {p['std']}")
    return p


def preprocess_image(image, p: dict, dtype=np.float32) -> np.ndarray:
    """Resize, centre-crop and normalise a Pillow image.

    Parameters
    ----------
    image : PIL.Image.Image, any mode (converted to RGB)
    p : preset dict
    dtype : float32 or float64

    Returns
    -------
    (crop, crop, 3) ndarray of ``dtype``.
    """
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    scale = p["resize"] / min(w, h)
    size = (max(p["crop"], round(w * scale)), max(p["crop"], round(h * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    left = int(round((size[0] - p["crop"]) / 2.0))
    top = int(round((size[1] - p["crop"]) / 2.0))
    image = image.crop((left, top, left + p["crop"], top + p["crop"]))
    dtype = np.dtype(dtype)
    x = np.asarray(image, dtype=dtype) / dtype.type(255)
    return ((x - np.asarray(p["mean"], dtype)) / np.asarray(p["std"], dtype)).astype(dtype, copy=False)


def load_image(path: os.PathLike | str, p: dict, dtype=np.float32) -> np.ndarray:
    """Decode an image file with Pillow and preprocess it; (crop, crop, 3).

    Raises FileNotFoundError, or ValueError naming the file when Pillow cannot decode it.
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such image: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return preprocess_image(image, p, dtype)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot decode image ({error})") from None

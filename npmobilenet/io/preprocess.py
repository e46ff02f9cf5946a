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

from ..validate import LIMITS, integer, number

__all__ = ["PRESETS", "preset", "validate_preset", "open_image", "load_image", "preprocess_image"]

# A preset's mean and std are in units of the [0, 1] pixel scale.
MEAN_RANGE = (-10.0, 10.0)
STD_RANGE = (1e-3, 100.0)

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
    """Check a preset read from a file; returns it. Raises ValueError naming the bad field.

    Sizes are integers up to ``LIMITS["image_side"]`` (a resize of 10^6 would allocate
    terabytes); mean and std are finite and std is bounded away from 0, so a preset can never
    turn an image into NaN or infinity.
    """
    if not isinstance(p, dict):
        raise ValueError(f"preprocess: expected an object, got {type(p).__name__}")
    for key in ("resize", "crop"):
        integer(f"preprocess.{key}", p.get(key), 1, LIMITS["image_side"])
    if p["crop"] > p["resize"]:
        raise ValueError(f"preprocess: crop {p['crop']} is larger than resize {p['resize']}")
    for key, (low, high) in (("mean", MEAN_RANGE), ("std", STD_RANGE)):
        value = p.get(key)
        if not (isinstance(value, list) and len(value) == 3):
            raise ValueError(f"preprocess.{key}: expected 3 numbers, got {value!r}")
        for channel, v in enumerate(value):
            number(f"preprocess.{key}[{channel}]", v, low, high)
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


def open_image(path: os.PathLike | str):
    """Decode an image file into an RGB Pillow image, as a camera or scanner meant it.

    The EXIF orientation is applied (a phone photo taken upright is upright), and 16-bit
    greyscale is scaled to 8 bits rather than clipped. Pillow's pixel limit
    (``Image.MAX_IMAGE_PIXELS``) guards against decompression bombs. Raises FileNotFoundError,
    or ValueError naming the file when it cannot be decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such image: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as error:
        raise ValueError(f"{path}: cannot decode image ({error})") from None


def _to_rgb(image):
    """RGB, with 16- and 32-bit integer greyscale scaled to 8 bits (Pillow would clip it)."""
    from PIL import Image

    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray(((wide + 128) // 257).astype(np.uint8), mode="L")
    return image.convert("RGB")


def load_image(path: os.PathLike | str, p: dict, dtype=np.float32) -> np.ndarray:
    """Decode an image file (see :func:`open_image`) and preprocess it; (crop, crop, 3).

    Raises FileNotFoundError, or ValueError naming the file when Pillow cannot decode it.
    """
    return preprocess_image(open_image(path), p, dtype)

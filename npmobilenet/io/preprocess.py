"""Image preprocessing presets tied to the weights' origin, and Pillow decoding.

A preset is a small JSON-able dict stored in the model file:
``{"name", "mode", "resize", "crop", "mean", "std"}``. The image is decoded to RGB by Pillow, then
brought to ``crop`` x ``crop`` the way ``mode`` says, each reproducing one framework's own
evaluation pipeline to float rounding:

- ``resize_crop`` (torchvision): the shorter side resized to ``resize`` (Pillow bilinear, with
  torchvision's size arithmetic), a centre crop, then ``(x / 255 - mean) / std``;
- ``squash`` (Keras): the whole image resized to ``crop`` x ``crop`` (Pillow nearest, as
  ``keras.utils.load_img(target_size=...)``), then ``(x / 255 - mean) / std``, which for mean =
  std = 0.5 is exactly Keras' ``x / 127.5 - 1``;
- ``central_crop`` (TF-slim): pixels scaled to [0, 1], the central ``crop / resize`` fraction
  cropped, TensorFlow's legacy bilinear resize to ``crop`` x ``crop``, then ``(x - mean) / std``.

A preset without ``mode`` (older model files) is ``resize_crop``.
"""

from __future__ import annotations

import os

import numpy as np

from ..validate import LIMITS, integer, number

__all__ = ["PRESETS", "MODES", "preset", "validate_preset", "open_image", "load_image",
           "preprocess_image"]

# A preset's mean and std are in units of the [0, 1] pixel scale.
MEAN_RANGE = (-10.0, 10.0)
STD_RANGE = (1e-3, 100.0)
MODES = ("resize_crop", "squash", "central_crop")

PRESETS = {
    # torchvision's ImageNet weights: transforms.Resize(256), CenterCrop(224), ToTensor(),
    # Normalize(mean, std) (torchvision.transforms.functional.resize / center_crop / normalize)
    "torchvision": {"name": "torchvision", "mode": "resize_crop", "resize": 256, "crop": 224,
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    # keras.applications: keras.utils.load_img(path, target_size=(224, 224)) (nearest),
    # img_to_array, then keras.applications.mobilenet[_v2].preprocess_input (mode "tf")
    "keras": {"name": "keras", "mode": "squash", "resize": 224, "crop": 224,
              "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    # TF-slim: preprocessing/inception_preprocessing.py preprocess_for_eval (central_fraction
    # 0.875, tf.image.resize_bilinear with align_corners=False), what eval_image_classifier.py
    # runs for MobileNet v1/v2
    "slim": {"name": "slim", "mode": "central_crop", "resize": 256, "crop": 224,
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
    if p.get("mode", MODES[0]) not in MODES:
        raise ValueError(f"preprocess.mode: expected one of {', '.join(MODES)}, got {p['mode']!r}")
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
    """Bring a Pillow image to ``(crop, crop, 3)`` as the preset's ``mode`` says (see the
    module docstring), in ``dtype`` (float32 or float64; the framework's own arithmetic is
    float32).
    """
    image = image.convert("RGB")
    dtype = np.dtype(dtype)
    mean, std = np.asarray(p["mean"], dtype), np.asarray(p["std"], dtype)
    mode = p.get("mode", MODES[0])
    if mode == "central_crop":
        x = _central_crop_resize(np.asarray(image), p["crop"] / p["resize"], p["crop"], dtype)
        return ((x - mean) / std).astype(dtype, copy=False)
    image = _squash(image, p["crop"]) if mode == "squash" else _resize_crop(image, p["resize"], p["crop"])
    x = np.asarray(image, dtype=dtype) / dtype.type(255)
    return ((x - mean) / std).astype(dtype, copy=False)


def _resize_crop(image, size: int, crop: int):
    """torchvision's ``Resize(size)`` then ``CenterCrop(crop)`` on a Pillow image: the shorter
    side to ``size``, the longer to ``int(size * long / short)`` (truncated), bilinear (Pillow's,
    antialiased), then the crop at ``int(round((side - crop) / 2.0))``."""
    from PIL import Image

    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if new_w < crop or new_h < crop:  # torchvision pads; a preset's crop is at most its resize
        raise ValueError(f"preprocess: a {new_w}x{new_h} image cannot be cropped to {crop}x{crop}")
    left = int(round((new_w - crop) / 2.0))
    top = int(round((new_h - crop) / 2.0))
    return image.crop((left, top, left + crop, top + crop))


def _squash(image, size: int):
    """``keras.utils.load_img(path, target_size=(size, size))``: the whole image, nearest."""
    from PIL import Image

    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.NEAREST)


def _central_crop_resize(pixels: np.ndarray, fraction: float, size: int, dtype) -> np.ndarray:
    """``tf.image.convert_image_dtype`` (``x * (1 / 255)``), ``tf.image.central_crop(x,
    fraction)``, then ``tf.compat.v1.image.resize_bilinear(x, [size, size],
    align_corners=False)`` (half_pixel_centers=False), in ``dtype`` as TF's kernel computes it:
    source coordinate ``i * (in / out)``, interpolated between ``floor`` and ``min(ceil, in -
    1)``, columns first. The crop is taken before scaling (the same values, less memory)."""
    h, w = pixels.shape[:2]
    top, left = int((h - h * fraction) / 2), int((w - w * fraction) / 2)
    real = np.dtype(dtype).type
    x = pixels[top:h - top, left:w - left].astype(real) * real(1 / 255)

    def weights(n_in: int):
        position = np.arange(size, dtype=real) * (real(n_in) / real(size))
        low = np.floor(position)
        upper = np.minimum(np.ceil(position).astype(np.int64), n_in - 1)
        return np.maximum(low.astype(np.int64), 0), upper, (position - low)

    y0, y1, y_lerp = weights(x.shape[0])
    x0, x1, x_lerp = weights(x.shape[1])
    x_lerp = x_lerp[None, :, None]
    top_row, bottom_row = x[y0], x[y1]
    upper = top_row[:, x0] + (top_row[:, x1] - top_row[:, x0]) * x_lerp
    lower = bottom_row[:, x0] + (bottom_row[:, x1] - bottom_row[:, x0]) * x_lerp
    return upper + (lower - upper) * y_lerp[:, None, None]


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

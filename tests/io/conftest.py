"""Paths of the committed fixtures (written by scripts/make_fixtures.py)."""

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SIZES = ("64x64", "67x45", "45x70")


class Case(NamedTuple):
    source: str
    arch: str
    weights: str  # file in FIXTURES
    expected: str  # expected-outputs file: x_<size> inputs, logits_<size>
    depth_multiplier: float | None = None  # None: the converter infers it
    rescaled: bool = False  # x is in [0, 255], rescaled by the model's own Rescaling layer

    def inputs(self, data, size: str, dtype=np.float32) -> np.ndarray:
        """The fixture's input as our model takes it: Keras's Rescaling(1/127.5, -1) layer is our
        preprocessing, applied here as Keras computes it (its scale is a float32 constant even
        under a float64 policy)."""
        x = data[f"x_{size}"].astype(dtype)
        return x * dtype(np.float32(1 / 127.5)) - dtype(1) if self.rescaled else x


CASES = [
    Case("torchvision", "mobilenet_v2", "torchvision_mobilenet_v2.pth", "expected_torchvision_mobilenet_v2.npz"),
    Case("keras", "mobilenet_v1", "keras_mobilenet_v1.h5", "expected_keras_mobilenet_v1.npz"),
    Case("keras", "mobilenet_v1", "keras_mobilenet_v1_keras3.h5", "expected_keras_mobilenet_v1.npz"),
    Case("keras", "mobilenet_v2", "keras_mobilenet_v2.h5", "expected_keras_mobilenet_v2.npz"),
    Case("keras", "mobilenet_v2", "keras_mobilenet_v2_keras3.h5", "expected_keras_mobilenet_v2.npz"),
    *(Case("torchvision", arch, f"torchvision_{arch}.pth", f"expected_torchvision_{arch}.npz")
      for arch in ("mobilenet_v3_large", "mobilenet_v3_small")),
    *(Case("keras", arch, f"keras_{arch}{layout}.h5", f"expected_keras_{arch}.npz",
           0.15 if "large" in arch else None, rescaled=True)
      for arch in ("mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v3_large_minimalistic",
                   "mobilenet_v3_small_minimalistic") for layout in ("", "_keras3")),
    *(Case("timm", "mobilenet_v4_conv_small", f"timm_mobilenet_v4_conv_small.{ext}",
           "expected_timm_mobilenet_v4_conv_small.npz") for ext in ("pth", "safetensors")),
]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference over the largest reference magnitude."""
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture
def tv_pth() -> Path:
    return FIXTURES / "torchvision_mobilenet_v2.pth"

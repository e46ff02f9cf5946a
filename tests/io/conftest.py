"""Paths of the committed fixtures (written by scripts/make_fixtures.py)."""

from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SIZES = ("64x64", "67x45", "45x70")
# (source, arch, weights file, expected-outputs file)
CASES = [
    ("torchvision", "mobilenet_v2", "torchvision_mobilenet_v2.pth", "expected_torchvision_mobilenet_v2.npz"),
    ("keras", "mobilenet_v1", "keras_mobilenet_v1.h5", "expected_keras_mobilenet_v1.npz"),
    ("keras", "mobilenet_v1", "keras_mobilenet_v1_keras3.h5", "expected_keras_mobilenet_v1.npz"),
    ("keras", "mobilenet_v2", "keras_mobilenet_v2.h5", "expected_keras_mobilenet_v2.npz"),
    ("keras", "mobilenet_v2", "keras_mobilenet_v2_keras3.h5", "expected_keras_mobilenet_v2.npz"),
]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference over the largest reference magnitude."""
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture
def tv_pth() -> Path:
    return FIXTURES / "torchvision_mobilenet_v2.pth"

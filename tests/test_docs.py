"""The guides' code runs as written: docs/internals.md (its printed shapes and numbers, the worked
example's exactly as TensorFlow gives them) and docs/testing.md without torch installed."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from .doc_blocks import run

ROOT = Path(__file__).parents[1]
EXAMPLE = json.loads((ROOT / "tests" / "data" / "seed002_separable_example.json").read_text())


def test_internals_guide_runs_and_reproduces_the_worked_example():
    guide = run(ROOT / "docs" / "internals.md")
    for name, key in (("image", "input"), ("depthwise_filter", "filter"), ("pointwise_filter", "pointwise_filter")):
        np.testing.assert_array_equal(guide[name], EXAMPLE[key])
    for name, key in (("h", "depthwise_conv2d_valid"), ("y", "separable_conv2d_valid"), ("full", "conv2d_valid")):
        assert guide[name].dtype == np.float32
        np.testing.assert_array_equal(guide[name].data, EXAMPLE[key])


def test_testing_guide_runs_without_torch():
    script = ("import sys; sys.modules['torch'] = None  # import torch now fails\n"
              "from tests.doc_blocks import run; run('docs/testing.md')\n"
              "assert sys.modules['torch'] is None, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr

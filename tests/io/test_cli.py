"""The console script: convert a fixture, then predict on image files (subprocesses)."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .conftest import FIXTURES


def _command() -> list[str]:
    """The installed ``npmobilenet`` script beside this interpreter, else its entry point."""
    script = shutil.which("npmobilenet", path=os.path.dirname(sys.executable))
    if script is not None:
        return [script]
    return [sys.executable, "-c", "import sys; from npmobilenet.cli import main; sys.exit(main())"]


def _run(*args, cwd=None):
    return subprocess.run([*_command(), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    dst = folder / "tv.safetensors"
    result = _run("convert", "--from", "torchvision", "--arch", "mobilenet_v2",
                  str(FIXTURES / "torchvision_mobilenet_v2.pth"), str(dst))
    assert result.returncode == 0, result.stderr
    assert "depth_multiplier 0.25, 10 classes" in result.stdout
    return dst


def test_predict_prints_a_ranked_list(converted, tmp_path):
    image = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (180, 240, 3), np.uint8)).save(image)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"name{i}" for i in range(10)))
    result = _run("predict", "--weights", str(converted), str(bad), str(image), "--topk", "4",
                  "--labels", str(labels))
    assert result.returncode == 1  # one image could not be read
    assert "broken.png" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(image)
    rows = [re.fullmatch(r"  (\d)\. (\d\.\d{4})  (name\d) \((\d)\)", line) for line in lines[1:]]
    assert len(rows) == 4 and all(rows), lines
    assert [int(r.group(1)) for r in rows] == [1, 2, 3, 4]
    probs = [float(r.group(2)) for r in rows]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert all(r.group(3) == f"name{r.group(4)}" for r in rows)


def test_convert_errors_leave_no_destination(tmp_path):
    dst = tmp_path / "out.safetensors"
    result = _run("convert", "--from", "keras", "--arch", "mobilenet_v1", "--depth-multiplier",
                  "0.5", str(FIXTURES / "keras_mobilenet_v1.h5"), str(dst))
    assert result.returncode == 1
    assert "tensor 'conv1/kernel' (for Conv2d_0/weights): expected shape (3, 3, 3, 16), found (3, 3, 3, 8)" in result.stderr
    assert "Traceback" not in result.stderr
    cut = tmp_path / "cut.pth"
    cut.write_bytes((FIXTURES / "torchvision_mobilenet_v2.pth").read_bytes()[:400_000])
    result = _run("convert", "--from", "torchvision", "--arch", "mobilenet_v2", str(cut), str(dst))
    assert result.returncode == 1 and "truncated" in result.stderr
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cut.pth"]

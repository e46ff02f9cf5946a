"""Data-parallel training under ``mpiexec -n 2`` equals one process: after an epoch with
synchronised batch norm every weight and moving statistic matches the single-process epoch
(float64 through the API within 1e-9, float32 through the command line within 1e-4, relative
to each tensor's largest value), process 0's checkpoint resumes in one process and a
single-process checkpoint in two, continuing as the uninterrupted run.

Skipped, saying why, without the ``mpi`` extra (mpi4py and mpiexec); the test extra installs it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from npmobilenet import build_model, load
from npmobilenet.io.model_file import load_training_state

from .tiny import images, trainer

pytest.importorskip("mpi4py", reason='data-parallel training needs the mpi extra: pip install "npmobilenet[mpi]"')
MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec: the mpich wheel (the mpi extra) provides it")
HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def mpiexec(*args, processes=2):
    """Run ``args`` in ``processes`` processes; fails the test with their output if they fail."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run([MPIEXEC, "-n", str(processes), *args], capture_output=True, text=True,
                            timeout=240, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def assert_same(path, expected, rtol):
    """Every weight, moving statistic and (float64) optimizer/averaging buffer of the
    checkpoint at ``path`` within ``rtol`` of the one at ``expected``, relative to the tensor's
    largest magnitude."""
    got, want = load(path).state_dict(), load(expected).state_dict()
    if rtol < 1e-6:
        got.update(load_training_state(path)[0])
        want.update(load_training_state(expected)[0])
    assert got.keys() == want.keys()
    for name, value in want.items():
        scale = np.abs(value).max()
        assert np.abs(got[name] - value).max() <= rtol * scale, name
    assert load_training_state(path)[1]["history"][-1]["val_loss"] == pytest.approx(
        load_training_state(expected)[1]["history"][-1]["val_loss"], rel=rtol)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The tiny run in one process: epoch 1 (a copy), then epoch 2 after resuming."""
    out = tmp_path_factory.mktemp("single")
    trainer(out / "run").fit(stop_after=1)
    shutil.copytree(out / "run", out / "epoch1")
    resumed = trainer(out / "run")
    resumed.resume()
    resumed.fit()
    return out


def test_two_processes_with_sync_bn_equal_one_and_resume_in_one(single, tmp_path):
    mpiexec(sys.executable, str(HERE / "run_api.py"), str(tmp_path), "1")
    assert_same(tmp_path / "last.safetensors", single / "epoch1" / "last.safetensors", 1e-9)
    assert_same(tmp_path / "best.safetensors", single / "epoch1" / "best.safetensors", 1e-9)  # averaged
    resumed = trainer(tmp_path)  # process 0's checkpoint, continued in one process
    resumed.resume()
    resumed.fit()
    assert_same(tmp_path / "last.safetensors", single / "run" / "last.safetensors", 1e-9)


def test_a_single_process_checkpoint_resumes_in_two(single, tmp_path):
    shutil.copytree(single / "epoch1", tmp_path, dirs_exist_ok=True)
    mpiexec(sys.executable, str(HERE / "run_api.py"), str(tmp_path), "2", "resume")
    assert_same(tmp_path / "last.safetensors", single / "run" / "last.safetensors", 1e-9)


def test_the_command_line_in_two_processes_equals_one_in_float32(tmp_path):
    data = images(45, 3)
    for name, label in data.class_indices.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in np.flatnonzero(data.labels() == label):
            Image.fromarray(data.images[i]).save(tmp_path / "data" / name / f"{i}.png")
    # 45 images, 10 held out: batches of 20 and 15 (shares 10/10, then 8/7). A small learning
    # rate: on noise images float32 gradients lose accuracy after the first step (one
    # process's float32 and float64 runs part by 1e-2 at --lr 0.05), rounding, not a bug.
    flags = ["--data", str(tmp_path / "data"), "--spec", "mobilenet_v1", "--depth-multiplier", "0.25",
             "--input-size", "48", "--epochs", "1", "--batch-size", "20", "--lr", "0.00002", "--workers", "1",
             "--quiet", "--export-samples", "0"]
    command = [sys.executable, "-m", "npmobilenet.cli", "train"]
    result = mpiexec(*command, *flags, "--out", str(tmp_path / "two"), "--distributed", "--sync-bn")
    assert result.stdout.count("epoch 1/1") == 1 and "in 2 processes, synchronised batch norm" in result.stdout
    one = subprocess.run([*command, *flags, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=240, cwd=ROOT)
    assert one.returncode == 0, one.stderr
    assert_same(tmp_path / "two" / "last.safetensors", tmp_path / "one" / "last.safetensors", 1e-4)
    trained = load(tmp_path / "one" / "last.safetensors").state_dict()["Conv2d_0/weights"]
    start = build_model("mobilenet_v1", depth_multiplier=0.25, input_size=48, num_classes=10, global_pool=True,
                        seed=0).state_dict()["Conv2d_0/weights"]
    assert np.abs(trained - start).max() > 10 * 1e-4 * np.abs(start).max()  # it moved, well beyond the tolerance

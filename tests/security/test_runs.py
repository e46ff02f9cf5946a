"""Run folders cannot be clobbered: one writer at a time (a lock naming its owner, taken over
only from a dead process), a folder holding a run is resumed or overwritten only on request, a
resume keeps the settings its state means, and a ``kill -9`` loses nothing.

The command-line runs train a quarter-width MobileNet v1 on 32x32 digits: a few seconds each.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from npmobilenet import build_model, load
from npmobilenet.data import EvalTransform, Loader, TrainTransform, digits
from npmobilenet.io.model_file import load_training_state
from npmobilenet.runs import RunFolder, RunFolderBusy
from npmobilenet.train import TrainConfig, Trainer

from .cli import assert_one_line_error, run_cli

TINY = ["--data", "builtin:digits", "--input-size", "32", "--depth-multiplier", "0.25", "--quiet"]


def start_cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "npmobilenet.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tensors(path) -> dict:
    """The weights and the training state (optimizer buffers, averages) of a checkpoint."""
    arrays, _ = load_training_state(path)
    return {**load(path).state_dict(), **{f"training/{k}": v for k, v in arrays.items()}}


def assert_same_tensors(a, b):
    a, b = tensors(a), tensors(b)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name == ".lock" or p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A finished one-epoch run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("runs") / "one-epoch"
    result = run_cli("train", *TINY, "--epochs", "1", "--export-samples", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def run_copy(one_epoch, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(one_epoch, copy)
    return copy


# -- the lock ----------------------------------------------------------------------------------

def test_two_runs_into_one_folder_at_once_one_runs_the_other_names_it(tmp_path):
    out = tmp_path / "shared"
    runs = [start_cli("train", *TINY, "--epochs", "2", "--export-samples", "0", "--out", out)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    codes = [run.returncode for run in runs]
    assert sorted(codes) == [0, 1], outputs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    line = assert_one_line_error(subprocess.CompletedProcess([], 1, *outputs[loser]),
                                 f"{out} is in use by process {runs[winner].pid} on {socket.gethostname()}")
    assert "lock file" in line
    assert "epoch 2/2" in outputs[winner][0]
    for name in ("last.safetensors", "best.safetensors"):  # the winner's outputs, intact
        model = load(out / name)
        assert all(np.isfinite(v).all() for v in model.state_dict().values())
        assert model.class_names in (None, [str(d) for d in range(10)])
    assert [row["epoch"] for row in json.loads((out / "metrics.json").read_text())] == [1, 2]
    assert leftovers(out) == []


def test_kill_9_during_training_then_resume_is_bit_exact(tmp_path):
    args = [*TINY, "--epochs", "3", "--export-samples", "0"]
    straight = run_cli("train", *args, "--out", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr

    killed = tmp_path / "killed"
    run = start_cli("train", *args, "--out", killed)
    deadline = time.monotonic() + 300
    while not (killed / "last.safetensors").exists():  # epoch 1 saved: kill it during epoch 2
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    assert run.returncode == -signal.SIGKILL
    assert (killed / ".lock").exists()  # a kill -9 cannot clean up

    resumed = run_cli("train", *args, "--out", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"taking over {killed / '.lock'}: its owner, process {run.pid} on" in resumed.stderr
    assert "epoch 3/3" in resumed.stdout
    assert_same_tensors(tmp_path / "straight" / "last.safetensors", killed / "last.safetensors")
    assert_same_tensors(tmp_path / "straight" / "best.safetensors", killed / "best.safetensors")
    assert leftovers(killed) == []


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(folder, **owner):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".lock").write_text(json.dumps(owner))


def test_a_stale_lock_is_taken_over_with_a_notice_and_leftovers_removed(tmp_path, capsys):
    pid = dead_pid()
    write_lock(tmp_path, pid=pid, host=socket.gethostname())
    (tmp_path / ".last.safetensors.k2j.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "notes.tmp").write_text("not ours")
    folder = RunFolder(tmp_path)
    with folder.lock():
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        assert not (tmp_path / ".last.safetensors.k2j.tmp").exists()
        with folder.lock():  # re-entrant for the same holder
            pass
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()
    assert (tmp_path / "notes.tmp").exists()
    err = capsys.readouterr().err
    assert f"taking over {tmp_path / '.lock'}: its owner, process {pid} on {socket.gethostname()}, is no " \
           f"longer running" in err


def test_a_live_foreign_or_unreadable_lock_is_refused_and_nothing_touched(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, pid=sleeper.pid, host=socket.gethostname())
        (tmp_path / ".metrics.json.x.tmp").write_text("maybe being written")
        with pytest.raises(RunFolderBusy, match=f"in use by process {sleeper.pid} on {socket.gethostname()}"):
            with RunFolder(tmp_path).lock():
                pass
        assert (tmp_path / ".metrics.json.x.tmp").exists()
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
    write_lock(tmp_path, pid=dead_pid(), host="elsewhere")  # cannot be checked from here
    with pytest.raises(RunFolderBusy, match="in use by process .* on host elsewhere .* delete the lock file"):
        with RunFolder(tmp_path).lock():
            pass
    (tmp_path / ".lock").write_text("")
    with pytest.raises(RunFolderBusy, match="does not name its owner"):
        with RunFolder(tmp_path).lock():
            pass
    (tmp_path / ".lock").unlink()
    with RunFolder(tmp_path).lock():  # a second writer in the same process is a second writer
        with pytest.raises(RunFolderBusy, match=f"in use by process {os.getpid()}"):
            with RunFolder(tmp_path).lock():
                pass


# -- a folder holding a run ----------------------------------------------------------------------

def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(run_copy):
    last = (run_copy / "last.safetensors").read_bytes()
    result = run_cli("train", *TINY, "--epochs", "1", "--out", run_copy)
    assert_one_line_error(result, f"{run_copy} already holds a training run", "--resume", "--overwrite")
    assert (run_copy / "last.safetensors").read_bytes() == last
    assert leftovers(run_copy) == []


def test_overwrite_replaces_the_run(run_copy):
    old = tensors(run_copy / "last.safetensors")
    (run_copy / "samples" / "stale.png").write_bytes(b"from the old run")
    result = run_cli("train", *TINY, "--epochs", "1", "--seed", "1", "--export-samples", "0",
                     "--overwrite", "--out", run_copy)
    assert result.returncode == 0, result.stderr
    assert not (run_copy / "samples").exists()
    new = tensors(run_copy / "last.safetensors")
    assert not np.array_equal(new["Logits/weights"], old["Logits/weights"])
    assert json.loads((run_copy / "config.json").read_text())["seed"] == 1


def test_resume_refuses_other_settings_listing_them(run_copy):
    last = (run_copy / "last.safetensors").read_bytes()
    result = run_cli("train", *TINY, "--resume", "--epochs", "2", "--optimizer", "adam", "--input-size", "48",
                     "--out", run_copy)
    assert_one_line_error(result, "cannot resume with settings that differ from the run's",
                          "input_size: [32, 32] -> [48, 48]", 'optimizer: "sgd" -> "adam"')
    assert (run_copy / "last.safetensors").read_bytes() == last


def test_resume_may_extend_the_epochs_and_says_so(run_copy):
    result = run_cli("train", *TINY, "--resume", "--epochs", "2", "--export-samples", "0", "--out", run_copy)
    assert result.returncode == 0, result.stderr
    assert "resuming after epoch 1 with changed settings: epochs: 1 -> 2" in result.stdout
    assert "epoch 2/2" in result.stdout and "epoch 1/" not in result.stdout
    assert [row["epoch"] for row in json.loads((run_copy / "metrics.json").read_text())] == [1, 2]


def test_divergence_is_one_line_and_keeps_the_last_good_checkpoint(run_copy):
    last = (run_copy / "last.safetensors").read_bytes()
    result = run_cli("train", *TINY, "--resume", "--epochs", "2", "--lr", "1e30", "--out", run_copy)
    assert_one_line_error(result, "training diverged: the loss became", "at epoch 2",
                          f"the last good checkpoint is kept: {run_copy / 'last.safetensors'} (epoch 1)",
                          "--resume and a lower --lr")
    assert (run_copy / "last.safetensors").read_bytes() == last
    assert leftovers(run_copy) == []


# -- the same through the Python API -------------------------------------------------------------

SIZE = 32
PRESET = {"name": "test", "resize": SIZE, "crop": SIZE, "mean": [0.5] * 3, "std": [0.5] * 3}


def trainer(out, seed=0, **options):
    data = digits(SIZE).subset(np.arange(0, 1797, 30))  # 60 images, every class
    model = build_model("mobilenet_v1", depth_multiplier=0.25, input_size=SIZE, num_classes=10,
                        global_pool=True, bn_momentum=0.1, seed=seed)
    model.class_names = [str(d) for d in range(10)]
    train = Loader(data, TrainTransform(PRESET, scale=(0.6, 1.0)), 16, shuffle=True)
    val = Loader(data, EvalTransform(PRESET), 32)
    return Trainer(model, train, val, out, TrainConfig(epochs=1, lr=0.02, ema_decay=0.9), progress=False,
                   report=False, **options)


def test_api_refuses_a_run_folder_unless_resumed_or_overwritten(tmp_path):
    trainer(tmp_path).fit()
    assert (tmp_path / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    with pytest.raises(ValueError, match="already holds a training run"):
        trainer(tmp_path).fit()
    trainer(tmp_path, overwrite=True).fit()
    resumed = trainer(tmp_path)
    resumed.model.class_names = None  # the stored names are taken over
    resumed.resume()
    assert resumed.model.class_names == [str(d) for d in range(10)]


def test_a_kill_between_last_and_best_loses_nothing(tmp_path):
    trainer(tmp_path).fit()
    best = tensors(tmp_path / "best.safetensors")
    # Killed after writing last, before best and the metrics (last is written first).
    (tmp_path / "best.safetensors").unlink()
    (tmp_path / "metrics.json").unlink()
    trainer(tmp_path, seed=7).resume()
    restored = tensors(tmp_path / "best.safetensors")
    assert restored.keys() == best.keys()
    for name in best:
        np.testing.assert_array_equal(restored[name], best[name], err_msg=name)
    assert json.loads((tmp_path / "metrics.json").read_text())[0]["epoch"] == 1

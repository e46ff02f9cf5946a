"""The command's one error path: one line, a documented exit code, the previous output intact;
the traceback only on request; no environment that makes importing fail."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import npmobilenet as nm
from npmobilenet.cli import main
from npmobilenet.cli.errors import EXIT_BROKEN_PIPE

from .cli import assert_one_line_error, run_cli

FIXTURES = Path(__file__).parents[1] / "fixtures"
CONVERT = ("convert", "--from", "torchvision", "--arch", "mobilenet_v2",
           FIXTURES / "torchvision_mobilenet_v2.pth")


def test_destination_that_is_a_directory(tmp_path):
    (tmp_path / "out").mkdir()
    assert_one_line_error(run_cli(*CONVERT, tmp_path / "out"), str(tmp_path / "out"),
                          "is a directory")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_file_too_large_keeps_the_previous_model_file(tmp_path):
    destination = tmp_path / "model.safetensors"
    destination.write_bytes(b"the previous model file")
    result = run_cli(*CONVERT, destination, file_size=100_000)  # the model needs ~1 MB
    assert_one_line_error(result, "file too large")
    assert destination.read_bytes() == b"the previous model file"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "missing.pth"
    quiet = run_cli("convert", "--from", "torchvision", "--arch", "mobilenet_v2", missing,
                    tmp_path / "x.safetensors")
    assert_one_line_error(quiet, str(missing))
    loud = run_cli("--debug", "convert", "--from", "torchvision", "--arch", "mobilenet_v2", missing,
                   tmp_path / "x.safetensors")
    assert loud.returncode == 1 and "Traceback" in loud.stderr
    by_env = run_cli("convert", "--from", "torchvision", "--arch", "mobilenet_v2", missing,
                     tmp_path / "x.safetensors", env={"NPMOBILENET_DEBUG": "1"})
    assert "Traceback" in by_env.stderr


def test_usage_errors_exit_2():
    result = run_cli("predict", "--weights", "m.safetensors", "--topk", "0", "x.png")
    assert result.returncode == 2
    assert "argument --topk: expected an integer >= 1, got 0" in result.stderr


def test_an_unexpected_error_is_still_one_line(monkeypatch, capsys):
    from npmobilenet.cli import summary

    def broken(args):
        raise TypeError("something the code did not expect")

    monkeypatch.setattr(summary, "run", broken)
    assert main(["summary", "mobilenet_v1"]) == 1
    line, = capsys.readouterr().err.splitlines()
    assert line == ("npmobilenet: error: internal error (TypeError: something the code did not "
                    "expect); rerun with --debug for the traceback and please report it")


def test_a_closed_pipe_ends_quietly(tmp_path):
    spec = nm.load_spec("mobilenet_v1")
    spec["body"] = [{**row, "stride": 1} for row in spec["body"]] * 100  # more than a pipe holds
    (tmp_path / "long.json").write_text(json.dumps(spec))
    process = subprocess.Popen([sys.executable, "-m", "npmobilenet.cli", "graph", "long.json",
                                "--input-size", "32", "--global-pool"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    process.stdout.readline()
    process.stdout.close()  # the reader goes away, as `| head -1` does
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert stderr == ""


# -- the Numba cache ---------------------------------------------------------------------------

RUN_A_MODEL = """
import warnings
warnings.simplefilter("error")  # the fallback folder must not warn
import numba, numpy as np, npmobilenet as nm
from npmobilenet.kernels import jit_cache
assert nm.__file__.startswith({package!r}), nm.__file__
model = nm.build_model("mobilenet_v1", input_size=32, depth_multiplier=0.25, num_classes=3)
model(np.zeros((2, 32, 32, 3), np.float32))
print(jit_cache.CACHE, numba.config.CACHE_DIR)
"""


@pytest.fixture
def unwritable_install(tmp_path):
    """A copy of the package whose kernel folder, home and cache folder cannot hold a cache."""
    package = tmp_path / "site"
    shutil.copytree(Path(nm.__file__).parent, package / "npmobilenet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (package / "npmobilenet" / "kernels" / "__pycache__").write_text("a file, not a folder")
    (tmp_path / "home").write_text("a file, not a folder")
    env = {**os.environ, "PYTHONPATH": str(package), "HOME": str(tmp_path / "home"),
           "XDG_CACHE_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp")}
    env.pop("NUMBA_CACHE_DIR", None)
    (tmp_path / "tmp").mkdir()
    return package, env


def test_kernels_are_cached_in_a_private_folder_when_no_cache_location_is_writable(unwritable_install):
    package, env = unwritable_install
    result = subprocess.run([sys.executable, "-c", RUN_A_MODEL.format(package=str(package))],
                            env=env, capture_output=True, text=True, timeout=600, cwd=package)
    assert result.returncode == 0, result.stderr
    private = Path(env["TMPDIR"]) / f"npmobilenet-numba-{os.getuid()}"
    assert result.stdout.split() == ["True", str(private)]
    assert oct(private.stat().st_mode & 0o777) == "0o700" and any(private.iterdir())


def test_a_folder_others_can_write_is_never_used_for_the_cache(unwritable_install):
    package, env = unwritable_install
    shared = Path(env["TMPDIR"]) / f"npmobilenet-numba-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    code = RUN_A_MODEL.replace('warnings.simplefilter("error")', "").format(package=str(package))
    with warnings.catch_warnings():
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, timeout=600, cwd=package)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "False"
    assert "no writable folder for Numba's kernel cache" in result.stderr
    assert not any(shared.iterdir())

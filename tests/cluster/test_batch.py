"""Sharded batch inference in one process (no Dask needed): --out shards equal to the stdout
records, a rerun that skips finished shards, atomic part files, a folder of another job
refused, embed's files and end points, evaluate's per-shard merge, and the one-line error when
--workers is asked for without the cluster extra."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from npmobilenet import batch
from npmobilenet.autograd import no_grad
from npmobilenet.cli.evaluate import merge
from npmobilenet.data import EvalTransform, ImageFolder, Loader
from npmobilenet.io import load, load_image
from npmobilenet.train import evaluate

from .conftest import CORRUPT, IMAGES, run


def parts(folder, suffix) -> list:
    return sorted(folder.glob(f"part-*.{suffix}"))


def test_csv_shards_hold_the_stdout_rows_and_a_rerun_skips_them(capsys, tmp_path, model_file, images):
    code, single, _ = run(capsys, "predict", "--weights", model_file, images, "--format", "csv")
    assert code == 1  # the corrupt image
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "predict", "--weights", model_file, images, "--format", "csv",
                            "--out", out, "--shard-size", 64)
    assert code == 1 and stdout == ""
    files = parts(out, "csv")
    assert [f.name for f in files] == [f"part-{k:05d}.csv" for k in range(4)]  # 241 inputs / 64
    header, *rows = single.splitlines()
    sharded = []
    for f in files:
        lines = f.read_text().splitlines()
        assert lines[0] == header  # each part file stands alone
        sharded += lines[1:]
    assert sharded == rows  # shards of whole batches: the same batches, the same floats
    corrupt = str(images / CORRUPT)
    assert err.splitlines()[0] == f"npmobilenet: error: {corrupt}: cannot decode image " \
                                  f"(cannot identify image file '{corrupt}')"
    assert err.splitlines()[-1] == (f"npmobilenet: {IMAGES} of {IMAGES + 1} inputs predicted into 4 shards "
                                    f"in {out}; 1 could not be (listed above)")

    stamps = {f: f.stat().st_mtime_ns for f in out.iterdir()}
    code, _, again = run(capsys, "predict", "--weights", model_file, images, "--format", "csv",
                         "--out", out, "--shard-size", 64)
    assert code == 1 and again == err  # the same report, from the shards' done records
    assert {f: f.stat().st_mtime_ns for f in out.iterdir()} == stamps  # nothing rewritten


def test_a_killed_run_resumes_from_the_shards_it_finished(capsys, tmp_path, model_file, images, monkeypatch):
    out = tmp_path / "out"
    args = ["predict", "--weights", model_file, images, "--format", "json", "--out", out, "--shard-size", 32]
    real = batch.ShardFolder.write
    def dies_at_shard_3(self, k, files, records):
        if k == 3:
            raise KeyboardInterrupt
        return real(self, k, files, records)
    monkeypatch.setattr(batch.ShardFolder, "write", dies_at_shard_3)
    assert run(capsys, *args)[0] == 130
    assert [f.name for f in parts(out, "done.json")] == [f"part-{k:05d}.done.json" for k in range(3)]
    stamps = {f: f.stat().st_mtime_ns for f in parts(out, "jsonl")}
    (out / ".part-00003.jsonl.999.1.tmp").write_text('{"path": "half a rec')  # as a kill leaves it
    monkeypatch.setattr(batch.ShardFolder, "write", real)
    assert run(capsys, *args)[0] == 1
    assert {f: f.stat().st_mtime_ns for f in parts(out, "jsonl")[:3]} == stamps
    assert not list(out.glob(".*.tmp"))
    code, single, _ = run(capsys, "predict", "--weights", model_file, images, "--format", "json")
    assert "".join(f.read_text() for f in parts(out, "jsonl")) == single


def test_a_failed_write_leaves_no_part_file(tmp_path):
    folder = batch.ShardFolder(tmp_path, ("jsonl",))
    with pytest.raises(TypeError):
        folder.write(0, {"jsonl": "text, not bytes"}, [])
    assert list(tmp_path.iterdir()) == []
    folder.write(0, {"jsonl": b"{}\n"}, [("a.png", None, "a.png: broken")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000.done.json", "part-00000.jsonl"]
    assert folder.finished(0) == {"images": 1, "errors": [["a.png", "a.png: broken"]]}
    assert folder.finished(1) is None


def test_a_folder_of_another_job_is_refused(capsys, tmp_path, model_file, images):
    out = tmp_path / "out"
    base = ["predict", "--weights", model_file, "--format", "json", "--out", out]
    assert run(capsys, *base, images / "c0")[0] == 0
    for changed in ([images / "c2"], [images / "c0", "--topk", "2"], [images / "c0", "--shard-size", 64]):
        code, _, err = run(capsys, *base, *changed)
        assert code == 1
        assert err == (f"npmobilenet: error: {out}: holds the shards of another job (other inputs, model, "
                       f"options or shard size); choose another --out or empty it\n")
    code, _, err = run(capsys, "predict", "--weights", model_file, images, "--out", tmp_path / "t")
    assert (code, err) == (1, "npmobilenet: error: --out writes json or csv part files: add --format "
                              "json or --format csv\n")
    code, _, err = run(capsys, "embed", "--weights", model_file, images, "--shard-size", 50)
    assert (code, err) == (1, "npmobilenet: error: --shard-size 50: expected a multiple of --batch-size "
                              "32, so that the batches are those of a single run\n")


def test_embed_files_hold_the_stdout_embeddings(capsys, tmp_path, model_file, images):
    code, stdout, err = run(capsys, "embed", "--weights", model_file, images)
    assert code == 1 and err.endswith(f"1 of {IMAGES + 1} inputs could not be embedded (see their error records)\n")
    records = [json.loads(line) for line in stdout.splitlines()]
    good = [r for r in records if "embedding" in r]
    assert [r["path"] for r in records if "error" in r] == [str(images / CORRUPT)]
    vectors = np.array([r["embedding"] for r in good], np.float32)
    assert vectors.shape == (IMAGES, 256) and vectors.std(axis=0).mean() > 0.01  # distinct images

    out = tmp_path / "emb"
    assert run(capsys, "embed", "--weights", model_file, images, "--out", out, "--shard-size", 64)[0] == 1
    rows = np.concatenate([np.load(f) for f in parts(out, "npy")])
    paths = [line for f in parts(out, "paths.txt") for line in f.read_text().splitlines()]
    assert rows.dtype == np.float32 and paths == [r["path"] for r in good]
    np.testing.assert_array_equal(rows, vectors)  # the same batches; JSON keeps float32 exactly
    errors = [e for f in parts(out, "done.json") for e in json.loads(f.read_text())["errors"]]
    assert [path for path, _ in errors] == [str(images / CORRUPT)]


def test_embed_any_end_point(capsys, model_file, images):
    image = images / "c0" / "003.png"
    code, stdout, _ = run(capsys, "embed", "--weights", model_file, image, "--endpoint", "Conv2d_11_pointwise")
    model = load(model_file)
    model.eval()
    with no_grad():  # the inference plan, as embed runs it
        model(load_image(image, model.preprocess)[None])
    expected = model.end_points["Conv2d_11_pointwise"].data  # (1, 2, 2, 128)
    assert code == 0 and expected.shape == (1, 2, 2, 128)
    np.testing.assert_array_equal(np.array(json.loads(stdout)["embedding"], np.float32), expected.ravel())
    code, _, err = run(capsys, "embed", "--weights", model_file, image, "--endpoint", "Conv2d_99")
    assert code == 1 and err.startswith('npmobilenet: error: --endpoint "Conv2d_99": not an end point of ')


def test_evaluate_shards_merge_to_the_whole(capsys, model_file, images):
    def metrics(*flags):
        code, stdout, err = run(capsys, "evaluate", "--weights", model_file, "--data", images, "--json", *flags)
        assert code == 0 and err.count("skipping unreadable image") == 1
        return json.loads(stdout)
    whole, sharded = metrics("--batch-size", 7, "--shard-size", 1001), metrics("--batch-size", 7, "--shard-size", 7)
    assert sharded.pop("loss") == pytest.approx(whole.pop("loss"), rel=1e-12)  # summed in another order
    scored = len(ImageFolder(images)) - 1  # the class folders' images (not sub/), less the corrupt one
    assert sharded == whole and whole["images"] == scored and whole["skipped_images"] == 1

    model = load(model_file)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        direct = evaluate(model, Loader(ImageFolder(images, {f"c{i}": i for i in range(10)}),
                                        EvalTransform(model.preprocess), 32), 10)
    assert merge([direct], 10) == direct  # one part merges to itself
    assert merge([None, direct, None], 10) == direct  # shards with no readable image add nothing
    with pytest.raises(ValueError, match="no readable images"):
        merge([None], 10)


def test_in_order_waits_for_the_shards_before():
    arrivals = [(2, "c"), (0, "a"), (3, "d"), (1, "b")]
    assert list(batch.in_order(iter(arrivals), 4)) == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
    with pytest.raises(RuntimeError, match="shards 2..3 never came back"):
        list(batch.in_order(iter(arrivals[1:2] + arrivals[3:]), 4))


def test_without_the_cluster_extra_workers_is_one_line_naming_it(tmp_path, model_file, images):
    (tmp_path / "sitecustomize.py").write_text(  # the import fails as if dask were not installed
        "import sys\nsys.modules['dask'] = sys.modules['distributed'] = None\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, "-m", "npmobilenet.cli", "predict", "--weights", str(model_file),
               str(images / "c0")]
    plain = subprocess.run(command, env=env, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr  # the default run needs no Dask
    for flags in (["--workers", "2"], ["--scheduler", "tcp://127.0.0.1:8786"]):
        asked = subprocess.run(command + flags, env=env, capture_output=True, text=True)
        assert asked.returncode == 1 and asked.stdout == ""
        assert asked.stderr == ("npmobilenet: error: --workers and --scheduler run on Dask, which is not "
                                "installed: pip install \"npmobilenet[cluster]\"\n")

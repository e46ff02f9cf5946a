"""Batch inference on Dask against the single-process run: two local workers give the same
predictions, embeddings and metrics in input order; --scheduler joins a running cluster; a
sharded run killed midway and rerun holds every image exactly once, lists the corrupt image and
leaves no partial part file."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from functools import partial

import numpy as np
import pytest

distributed = pytest.importorskip(
    "dask.distributed", reason='the cluster extra is not installed (pip install "npmobilenet[cluster]")')

from npmobilenet.batch import expand_inputs, run_shards, split  # noqa: E402
from npmobilenet.cli.predict import Options, predict_shard  # noqa: E402
from npmobilenet.cluster import THREAD_VARIABLES, Dask  # noqa: E402

from .conftest import CORRUPT, IMAGES, assert_same_predictions, json_lines, run  # noqa: E402


def one_thread_run(*args) -> tuple[int, str, str]:
    """``npmobilenet ARGS`` in a new process whose Numba and BLAS pools have one thread, as each
    of two local workers on 2 cores has: the same floats, bit for bit. (OpenBLAS rounds
    differently with 2 threads, a few 1e-7 relative, which the default run below checks.)"""
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1")}
    done = subprocess.run([sys.executable, "-m", "npmobilenet.cli", *map(str, args)], env=env,
                          capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def test_two_workers_give_the_single_process_records_in_input_order(capsys, model_file, images):
    args = ["predict", "--weights", model_file, images, "--format", "json"]
    code, cluster, _ = run(capsys, *args, "--workers", 2, "--shard-size", 32)
    assert (code, cluster) == one_thread_run(*args)[:2]  # byte for byte, in input order
    records = json_lines(cluster)
    assert [r["path"] for r in records] == [p for p, _ in expand_inputs([str(images)])] and len(records) == IMAGES + 1
    assert_same_predictions(records, json_lines(run(capsys, *args)[1]), tolerance=1e-5)

    args = ["embed", "--weights", model_file, images]
    code, cluster, _ = run(capsys, *args, "--workers", 2, "--shard-size", 64)
    assert (code, cluster) == one_thread_run(*args)[:2] and code == 1
    single = json_lines(run(capsys, *args)[1])
    assert [r["path"] for r in json_lines(cluster)] == [r["path"] for r in single]
    vectors = [np.array([r["embedding"] for r in rows if "embedding" in r]) for rows in (json_lines(cluster), single)]
    np.testing.assert_allclose(vectors[0], vectors[1], rtol=0, atol=1e-4)  # features of size ~1

    args = ["evaluate", "--weights", model_file, "--data", images, "--json"]
    code, split_up, err = run(capsys, *args, "--workers", 2, "--shard-size", 32)
    assert code == 0 and err.count("skipping unreadable image") == 1  # met on a worker, reported here
    whole, split_up = json.loads(one_thread_run(*args)[1]), json.loads(split_up)
    # A lone last image is batched alone here, with the batch before it in one shard of 256.
    assert split_up.pop("loss") == pytest.approx(whole.pop("loss"), rel=1e-6)
    assert split_up == whole


def test_a_running_cluster_is_joined_by_its_address(capsys, model_file, images):
    single = json_lines(run(capsys, "predict", "--weights", model_file, images, "--format", "json")[1])
    # One worker of two task threads, in this process: shards run side by side on one cached model.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        code, out, _ = run(capsys, "predict", "--weights", model_file, images, "--format", "json",
                           "--scheduler", cluster.scheduler_address, "--shard-size", 32)
        assert code == 1
        assert json_lines(out) == single  # this process's threads: the same floats

        class Counted:
            images = 0

            def update(self, n):
                self.images += n
        counted = Counted()
        with distributed.Client(cluster) as client:
            entries = list(expand_inputs([str(images)]))
            options = Options(str(model_file), None, 3, 32, 1)
            shards = split(entries, 64)
            results = list(run_shards(Dask(client, distributed), partial(predict_shard, options), shards,
                                      progress=counted))
        assert counted.images == len(entries) == IMAGES + 1  # the bar counts images, not shards
        assert [path for records in results for path, _, _ in records] == [p for p, _ in entries]


def test_a_killed_sharded_run_resumes_with_every_image_once(capsys, tmp_path, model_file, images):
    out = tmp_path / "out"
    args = ["predict", "--weights", str(model_file), str(images), "--format", "json", "--out", str(out),
            "--workers", "2", "--batch-size", "1", "--shard-size", "1"]
    job = subprocess.Popen([sys.executable, "-m", "npmobilenet.cli", *args], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("*.done.json"))) < 10 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the client, the cluster's nannies and workers
        job.wait()
    done_before = sorted(out.glob("*.done.json"))
    assert 10 <= len(done_before) < IMAGES + 1, "the run should have been killed midway"
    for part in out.glob("part-*.jsonl"):
        json_lines(part.read_text())  # whole records only: parts are renamed into place complete
    stamps = {f: f.stat().st_mtime_ns for f in done_before}

    code, stdout, err = run(capsys, *args)
    assert code == 1 and stdout == ""
    assert {f: f.stat().st_mtime_ns for f in done_before} == stamps  # finished shards not redone
    assert not list(out.glob(".*.tmp"))
    corrupt = str(images / CORRUPT)
    assert f"npmobilenet: error: {corrupt}: cannot decode image" in err
    records = json_lines("".join(f.read_text() for f in sorted(out.glob("part-*.jsonl"))))
    assert Counter(r["path"] for r in records) == Counter(p for p, _ in expand_inputs([str(images)]))
    single = one_thread_run("predict", "--weights", model_file, images, "--format", "json", "--batch-size", 1)[1]
    assert records == json_lines(single)


def _pools() -> tuple[int, list[int]]:
    from threadpoolctl import threadpool_info
    import numba

    import numpy  # noqa: F401 -- its OpenBLAS is what the forward passes use
    return numba.config.NUMBA_NUM_THREADS, [pool["num_threads"] for pool in threadpool_info()
                                            if pool["internal_api"] == "openblas"]


@pytest.mark.parametrize("workers", [1, 2])
def test_local_workers_share_the_cores_in_numba_and_openblas(workers):
    pytest.importorskip("threadpoolctl", reason="threadpoolctl (from scikit-learn) reads OpenBLAS's pools")
    from npmobilenet.cluster import connect

    share = max(1, (os.cpu_count() or 1) // workers)
    before = dict(os.environ)
    with connect(workers=workers) as dask:
        pools = dask.client.run(_pools)
    assert dict(os.environ) == before  # the client's own settings untouched
    # OpenBLAS reads its count when numpy loads, before Dask applies a worker's `env` (and
    # Dask's own default is 1): the counts must be in place when the worker process starts.
    assert list(pools.values()) == [(share, [share])] * workers

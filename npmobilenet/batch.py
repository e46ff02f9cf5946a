"""Batch inference over many images, whatever runs it (this process or a Dask cluster).

The parts that do not depend on the engine:

- :func:`expand_inputs`: image files, folders (recursive, sorted), glob patterns and ``@LIST``
  files into one ordered list of ``(path, error)`` entries.
- :func:`split`: that list cut into shards of a fixed size, numbered by position, so the same
  inputs and shard size always give the same shards (what makes a rerun able to resume).
- :func:`cached_model`: the model of a file, loaded once per process (a Dask worker loads it for
  its first shard and keeps it), with a lock that keeps its forward passes one at a time.
- :func:`forward_records`: a shard's images decoded in threads and run batch by batch, the
  body of every command's shard function.
- :class:`ShardFolder`: ``--out DIR``: each shard's files written atomically, its
  ``part-NNNNN.done.json`` last (the shard's image count and unreadable images), so a shard is
  finished exactly when that file exists and a rerun skips it.
- :func:`run_shards`: every shard through an engine (:class:`InProcess`, or
  :class:`npmobilenet.cluster.Dask`), results handed on in shard order (:func:`in_order`)
  whatever order they finish in.

A shard's records are computed by one function per command (``predict_shard`` in
:mod:`npmobilenet.cli.predict`, ...) whichever engine runs it, so a cluster run gives what a
single process gives by construction. A record is ``(path, result, error)``: exactly one of
``result`` and ``error`` is None.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .autograd import no_grad
from .data import IMAGE_EXTENSIONS
from .io import load, load_image
from .io.labels import MAX_LABELS_BYTES
from .runs import RunFolder

GLOB_CHARACTERS = frozenset("*?[")
DONE = "done.json"  # the suffix of the file that marks a shard finished


def expand_inputs(inputs: list[str]):
    """``(path, None)`` for each image the inputs name, in order, or ``(input, error message)``
    for an input that names none."""
    for item in inputs:
        if item.startswith("@"):
            try:
                lines = _read_list(item[1:])
            except (OSError, ValueError) as error:
                yield item, str(error)
                continue
            for line in lines:
                yield from _expand_one(line)
        else:
            yield from _expand_one(item)


def _read_list(path: str) -> list[str]:
    with open(path, "rb") as handle:
        raw = handle.read(MAX_LABELS_BYTES + 1)
    if len(raw) > MAX_LABELS_BYTES:
        raise ValueError(f"{path}: a list of inputs larger than {MAX_LABELS_BYTES} bytes")
    try:
        return [line.strip() for line in raw.decode("utf8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ValueError(f"{path}: a list of inputs that is not UTF-8 text") from None


def _expand_one(item: str):
    if os.path.isdir(item):
        found = False
        for root, folders, files in os.walk(item):
            folders.sort()
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    found = True
                    yield os.path.join(root, name), None
        if not found:
            yield item, f"{item}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder"
    elif os.path.exists(item) or not GLOB_CHARACTERS & set(item):
        yield item, None  # a missing file is reported when it is read
    else:
        matches = sorted(path for path in glob.glob(item, recursive=True) if os.path.isfile(path))
        if not matches:
            yield item, f"{item}: no file matches the pattern"
        for path in matches:
            yield path, None


def split(entries: list, size: int) -> list[list]:
    """Shard ``k`` holds ``entries[k * size:(k + 1) * size]``."""
    return [entries[start:start + size] for start in range(0, len(entries), size)]


def in_order(results, count: int):
    """Yield ``(k, result)`` for ``k = 0 .. count - 1`` from ``(k, result)`` pairs arriving in any
    order, holding back those that come early."""
    waiting, next_key = {}, 0
    for key, result in results:
        waiting[key] = result
        while next_key in waiting:
            yield next_key, waiting.pop(next_key)
            next_key += 1
    if next_key != count:
        raise RuntimeError(f"batch: shards {next_key}..{count - 1} never came back")


def run_shards(engine, compute, shards: list[list], folder: "ShardFolder | None" = None,
               render=None, progress=None):
    """Run ``compute(entries) -> records`` on every shard on ``engine``, yielding in shard order:
    without ``folder``, each shard's records; with it, each shard's done record, after writing
    the files ``render(records) -> {suffix: bytes}`` of every shard not finished before (those are
    read back, not redone). ``progress`` (a tqdm bar, or None) counts the images."""
    if folder is None:
        items = [(k, (shard,)) for k, shard in enumerate(shards)]
        function = compute
    else:
        finished = {k: folder.finished(k) for k in range(len(shards))}
        finished = {k: done for k, done in finished.items() if done is not None}
        items = [(k, (compute, render, folder, k, shard)) for k, shard in enumerate(shards)
                 if k not in finished]
        function = _stored
    results = engine.map(function, items)
    if folder is not None:
        results = _merged(finished, results)
    for k, result in in_order(_counted(results, progress, folder is None), len(shards)):
        yield result


def _stored(compute, render, folder, k, entries) -> dict:
    """The task of one shard of a job with ``--out``: its done record travels back, not its
    records."""
    records = compute(entries)
    return folder.write(k, render(records), records)


def _merged(finished: dict, results):
    """The done records read back first, then those of the shards run now."""
    yield from finished.items()
    yield from results


def _counted(results, progress, records: bool):
    """``results`` passed on, the progress bar moved by each one's images."""
    for k, result in results:
        if progress is not None:
            progress.update(len(result) if records else result["images"])
        yield k, result


_models: dict[tuple, tuple] = {}
_models_lock = threading.Lock()


def cached_model(path: str):
    """``(model, lock)``: the model file at ``path`` loaded in eval mode, once per process and
    file version (path, size, modification time). Hold ``lock`` while running the model: its
    end points and inference buffers serve one call at a time."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    with _models_lock:
        if key not in _models:
            model = load(path)
            model.eval()
            _models.clear()  # one model per process: a new version replaces the old
            _models[key] = (model, threading.Lock())
        return _models[key]


def forward_records(model, lock, entries: list, batch_size: int, threads: int, take, end_points=()) -> list:
    """The records of ``entries`` (``(path, error)``): images decoded by ``threads`` threads and
    run ``batch_size`` at a time, keeping the output and the ``end_points`` named (the plan
    reuses the other activations' memory); ``take(model, output) -> [result or None per row]``
    (called holding ``lock``) turns each batch's output into results, None for a row that is
    not finite."""
    records = []
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(entries), batch_size):
            batch = entries[start:start + batch_size]
            decoded = list(pool.map(lambda entry: _decode(entry, model.preprocess, model.dtype), batch))
            good = [i for i, x in enumerate(decoded) if isinstance(x, np.ndarray)]
            results = {}
            if good:
                with lock, no_grad():
                    output = model(np.stack([decoded[i] for i in good]), end_points=end_points)
                    results = dict(zip(good, take(model, output)))
            for i, (path, _) in enumerate(batch):
                if i not in results:
                    records.append((path, None, decoded[i]))
                elif results[i] is None:
                    records.append((path, None, f"{path}: the model's output is not finite for this image"))
                else:
                    records.append((path, results[i], None))
    return records


def _decode(entry, preprocess, dtype):
    """The preprocessed image of ``entry``, or the message saying why there is none."""
    path, error = entry
    if error is not None:
        return error
    try:
        return load_image(path, preprocess, dtype)
    except FileNotFoundError:
        return f"{path}: no such file"
    except (ValueError, OSError) as failure:
        return str(failure)


def fingerprint(job: dict, weights: str, entries: list, shard_size: int) -> str:
    """A digest of what fixes a sharded job's records: the command and its options, the model
    file's version, the shard size and the inputs in order."""
    stat = os.stat(weights)
    digest = hashlib.sha256(json.dumps([job, os.path.realpath(weights), stat.st_size, stat.st_mtime_ns,
                                        shard_size], sort_keys=True).encode("utf8"))
    for entry in entries:
        digest.update(json.dumps(entry).encode("utf8") + b"\n")
    return digest.hexdigest()


class ShardFolder:
    """``--out DIR`` of a sharded job. :meth:`open` takes the folder (a lock file, as training
    runs use, naming this process; stale temporary files removed) and checks that it holds no
    other job's shards; workers then call :meth:`write` from any process."""

    def __init__(self, path: os.PathLike | str, suffixes: tuple[str, ...]):
        self.path, self.suffixes = Path(path), suffixes

    def part(self, k: int, suffix: str) -> Path:
        return self.path / f"part-{k:05d}.{suffix}"

    @contextmanager
    def open(self, identity: str):
        """Hold the folder for the job with digest ``identity`` for the ``with`` block."""
        with RunFolder(self.path).lock() as folder:
            job = self.path / "job.json"
            if job.exists():
                if json.loads(job.read_text(encoding="utf8")).get("fingerprint") != identity:
                    raise ValueError(f"{self.path}: holds the shards of another job (other inputs, "
                                     f"model, options or shard size); choose another --out or empty it")
            elif any(self.path.glob("part-*")):
                raise ValueError(f"{self.path}: holds part files but no job.json; choose another "
                                 f"--out or empty it")
            else:
                folder.write_text("job.json", json.dumps({"fingerprint": identity}) + "\n")
            yield self

    def finished(self, k: int) -> dict | None:
        """The done record ``{"images": n, "errors": [[path, message], ...]}`` of a finished
        shard, else None."""
        try:
            return json.loads(self.part(k, DONE).read_text(encoding="utf8"))
        except FileNotFoundError:
            return None

    def write(self, k: int, files: dict[str, bytes], records: list) -> dict:
        """Write shard ``k``'s ``files`` ({suffix: bytes}) atomically, then its done record
        (which it returns), so a shard killed midway is simply redone."""
        for suffix in self.suffixes:
            _write_atomic(self.part(k, suffix), files[suffix])
        done = {"images": len(records), "errors": [[path, error] for path, _, error in records
                                                   if error is not None]}
        _write_atomic(self.part(k, DONE), (json.dumps(done) + "\n").encode("utf8"))
        return done


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file renamed over it (``.NAME.*.tmp``, the pattern
    :class:`~npmobilenet.runs.RunFolder` clears)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class InProcess:
    """The default engine: every shard in this process, one after the other."""

    def share(self, value):
        """``value`` as the shard function receives it (here: itself)."""
        return value

    def map(self, function, items):
        """``(k, function(*args))`` for each ``(k, args)`` of ``items``."""
        for k, args in items:
            yield k, function(*args)

"""``npmobilenet predict --weights FILE INPUT...``: the top classes of each image, for people or
scripts, in this process or on a Dask cluster.

INPUTs are image files, folders (searched recursively for image files, in sorted order), glob
patterns (``'photos/**/*.jpg'``, for shells that do not expand them) and ``@LIST`` (a text file
naming one input a line). Images are decoded in threads and classified ``--batch-size`` at a
time, ``--shard-size`` images to a shard; records come out in input order as each shard is done.
Class names are the model file's own (``--labels`` overrides them). ``--format json`` writes
JSON lines::

    {"path": "a.jpg", "predictions": [{"label": "tabby", "index": 281, "probability": 0.71}, ...]}
    {"path": "b.png", "error": "b.png: cannot decode image (...)"}

ranked by descending probability; ``--format csv`` one row per image and rank. An input that
cannot be read or classified gets an error record (text: a line on stderr), the others are
still predicted, and the exit code is then 1.

``--workers N`` / ``--scheduler ADDRESS`` run the shards on Dask (:mod:`npmobilenet.cluster`);
``--out DIR`` writes each shard's records to ``DIR/part-NNNNN.jsonl`` (or ``.csv``) instead of
stdout, and a rerun resumes (:class:`npmobilenet.batch.ShardFolder`). The helpers here serve
``embed`` and ``evaluate`` too.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial

import numpy as np

from .. import functional as F
from ..batch import (InProcess, ShardFolder, cached_model, expand_inputs, fingerprint,
                     forward_records, run_shards, split)
from ..data import MAX_WORKERS
from ..io.labels import model_class_names
from .arguments import MAX_BATCH, integer
from .errors import report

MAX_CLUSTER_WORKERS = 1024
SHARD_BATCHES = 8  # batches per shard by default
SUFFIXES = {"json": "jsonl", "csv": "csv"}  # --format -> the part files' suffix


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="classify images with a model file",
        description="Preprocess each image as the model file says and write its top classes "
                    "with their probabilities. INPUT: an image file, a folder (recursive), a glob "
                    "pattern, or @LIST (a file naming one input a line). Unreadable images get an "
                    "error record and exit code 1; the others are still predicted.")
    parser.add_argument("--weights", required=True, metavar="FILE", help="model file")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders, globs or @LIST")
    parser.add_argument("--topk", type=integer(1), default=5,
                        help="classes per image (at most the model's number of classes)")
    parser.add_argument("--labels", metavar="FILE", default=None,
                        help="class names, one a line (default: those the model file stores; for "
                             "files without names, ImageNet's for 1000- and 1001-class models)")
    parser.add_argument("--format", choices=["text", "json", "csv"], default="text",
                        help="text for people; json (one object a line) or csv for scripts")
    add_batch_arguments(parser, out="write the records as shards DIR/part-NNNNN.jsonl (--format "
                                    "json) or .csv (--format csv) instead of to stdout; a rerun "
                                    "skips the finished shards")
    parser.add_argument("--trace", metavar="FILE", help="write an op trace to FILE (.json, .dot or a table)")
    parser.set_defaults(func=run)


def add_batch_arguments(parser, out: str | None) -> None:
    """The flags of the commands that run many images: batch and shard sizes, decoding
    threads, the Dask engine, and ``--out DIR`` (help ``out``) unless None."""
    parser.add_argument("--batch-size", type=integer(1, MAX_BATCH), default=32, metavar="N",
                        help=f"images per forward pass, in [1, {MAX_BATCH}]")
    parser.add_argument("--decode-threads", type=integer(1, MAX_WORKERS), default=2, metavar="N",
                        help=f"image decoding threads of each process, in [1, {MAX_WORKERS}] "
                             f"(predict's and evaluate's --workers before that came to count Dask "
                             f"workers)")
    parser.add_argument("--shard-size", type=integer(1), default=None, metavar="N",
                        help="images per shard (one task on a cluster" + (", one part file with --out"
                                                                          if out else "")
                             + "), a multiple of --batch-size, so that every batch holds the "
                               "images it holds in a single run (default: 8 batches)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=integer(1, MAX_CLUSTER_WORKERS), default=None, metavar="N",
                       help="run on a local Dask cluster of N worker processes (pip install "
                            "\"npmobilenet[cluster]\"); default: in this process")
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="run on the Dask cluster whose scheduler is at ADDRESS (tcp://HOST:8786); "
                            "its workers must see the model and the images at the same paths")
    if out is not None:
        parser.add_argument("--out", metavar="DIR", default=None, help=out)


def shard_size(args) -> int:
    """``--shard-size``, checked to be a whole number of batches."""
    if args.shard_size is None:
        return SHARD_BATCHES * args.batch_size
    if args.shard_size % args.batch_size:
        raise ValueError(f"--shard-size {args.shard_size}: expected a multiple of --batch-size "
                         f"{args.batch_size}, so that the batches are those of a single run")
    return args.shard_size


@contextmanager
def engine(args):
    """The engine the flags ask for: Dask for ``--workers``/``--scheduler``, else this process."""
    if args.workers is None and args.scheduler is None:
        yield InProcess()
        return
    if getattr(args, "trace", None) is not None:
        raise ValueError("--trace records the ops of this process: it cannot be combined with "
                         "--workers or --scheduler")
    from ..cluster import connect

    with connect(args.workers, args.scheduler) as dask:
        yield dask


def progress(args, total: int):
    """A context giving a progress bar of images on stderr for cluster and ``--out`` runs (on a
    terminal only), else None: a plain run keeps stderr for its messages."""
    if args.workers is None and args.scheduler is None and getattr(args, "out", None) is None:
        return nullcontext()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, disable=None, dynamic_ncols=True)


@dataclass(frozen=True)
class Options:
    """What a worker needs to predict a shard."""
    weights: str
    labels: str | None
    topk: int
    batch_size: int
    decode_threads: int


def predict_shard(options: Options, entries: list) -> list:
    """The records of one shard, ``(path, [(index, label, probability), ...], None)`` or
    ``(path, None, error)``: the same function in this process and on a worker."""
    model, lock = cached_model(options.weights)
    names = model_class_names(model, options.weights, options.labels)
    topk = min(options.topk, len(names))

    def rank(model, logits):
        logits = logits.data
        probabilities = F.softmax(logits, axis=-1).data
        ranked = []
        for row in range(len(logits)):
            if not np.isfinite(probabilities[row]).all():
                ranked.append(None)
                continue
            order = np.argsort(-logits[row], kind="stable")[:topk]
            ranked.append([(int(k), names[k], float(f"{probabilities[row, k]:.6g}")) for k in order])
        return ranked

    return forward_records(model, lock, entries, options.batch_size, options.decode_threads, rank)


class Writer:
    """Writes predict's records to ``stream`` in one format (a CSV header first)."""

    def __init__(self, form: str, stream):
        self.form, self.stream = form, stream
        self.csv = csv.writer(stream, lineterminator="\n") if form == "csv" else None
        if self.csv is not None:
            self.csv.writerow(["path", "rank", "label", "index", "probability", "error"])

    def write(self, record) -> None:
        path, ranked, error = record
        if error is not None:
            self.error(path, error)
        elif self.form == "json":
            print(json.dumps({"path": path, "predictions": [
                {"label": label, "index": index, "probability": probability}
                for index, label, probability in ranked]}), file=self.stream)
        elif self.form == "csv":
            for rank, (index, label, probability) in enumerate(ranked, 1):
                self.csv.writerow([path, rank, label, index, probability, ""])
        else:
            print(path, file=self.stream)
            for rank, (index, label, probability) in enumerate(ranked, 1):
                print(f"  {rank}. {probability:.4f}  {label} ({index})", file=self.stream)

    def error(self, path: str, message: str) -> None:
        if self.form == "json":
            print(json.dumps({"path": path, "error": message}), file=self.stream)
        elif self.form == "csv":
            self.csv.writerow([path, "", "", "", "", message])
        else:
            report(message)


def render(form: str, records: list) -> dict[str, bytes]:
    """A shard's part file: the records as ``--format`` prints them (CSV with its header)."""
    stream = io.StringIO()
    writer = Writer(form, stream)
    for record in records:
        writer.write(record)
    return {SUFFIXES[form]: stream.getvalue().encode("utf8")}


def check_model(weights: str, command: str):
    """The model of ``weights`` (cached for this process's shards), refused early and in one
    line when ``command`` cannot use it."""
    model, _ = cached_model(weights)
    if model.preprocess is None:
        raise ValueError(f"{weights}: the model file has no preprocessing preset")
    if command != "embed" and model.graph.options.num_classes == 0:
        raise ValueError(f"{weights}: a headless model (it returns features, not classes); "
                         f"train a head on it first: npmobilenet train --weights {weights} --data DIR")
    return model


def run(args) -> int:
    if args.out is not None and args.format not in SUFFIXES:
        raise ValueError("--out writes json or csv part files: add --format json or --format csv")
    model = check_model(args.weights, "predict")
    model_class_names(model, args.weights, args.labels)  # a bad --labels fails here, once
    options = Options(args.weights, args.labels, args.topk, args.batch_size, args.decode_threads)
    compute = partial(predict_shard, options)
    entries = list(expand_inputs(args.inputs))
    if args.out is not None:
        job = {"command": "predict", "format": args.format, "topk": args.topk, "labels": args.labels}
        return run_to_folder(args, entries, job, compute, partial(render, args.format),
                             (SUFFIXES[args.format],), "predicted")
    writer = Writer(args.format, sys.stdout)
    failed = 0
    with engine(args) as runner, progress(args, len(entries)) as bar:
        for records in run_shards(runner, compute, split(entries, shard_size(args)), progress=bar):
            for record in records:
                failed += record[2] is not None
                writer.write(record)
            sys.stdout.flush()
    if failed and args.format != "text":
        report(f"{failed} of {len(entries)} inputs could not be predicted (see their error records)")
    return 1 if failed else 0


def run_to_folder(args, entries: list, job: dict, compute, render_shard, suffixes, verb: str) -> int:
    """Run a job into ``--out`` shards, resuming a killed one; then report every unreadable
    input (one line each) and the totals on stderr. Exit code 1 if any input failed."""
    folder = ShardFolder(args.out, suffixes)
    size = shard_size(args)
    shards = split(entries, size)
    with (folder.open(fingerprint(job, args.weights, entries, size)), engine(args) as runner,
          progress(args, len(entries)) as bar):
        done = list(run_shards(runner, compute, shards, folder, render_shard, bar))
    errors = [error for record in done for _, error in record["errors"]]
    for error in errors:
        report(error)
    print(f"npmobilenet: {len(entries) - len(errors)} of {len(entries)} inputs {verb} into "
          f"{len(shards)} shards in {args.out}" + (f"; {len(errors)} could not be (listed above)"
                                                   if errors else ""), file=sys.stderr, flush=True)
    return 1 if errors else 0

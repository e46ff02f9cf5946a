"""``npmobilenet embed --weights FILE INPUT...``: each image's features, for search, clustering or
a classifier of one's own.

The features are the pooled ones (the classifier's input) by default, or the activation of any
end point named with ``--endpoint`` (``npmobilenet summary`` lists them), flattened to one
float32 vector per image. INPUTs are as for ``predict``. Without ``--out`` each image is one JSON
line on stdout, in input order::

    {"path": "a.jpg", "embedding": [0.0, 1.25, ...]}
    {"path": "b.png", "error": "b.png: cannot decode image (...)"}

With ``--out DIR`` each shard is ``DIR/part-NNNNN.npy`` (float32, one row per readable image)
and ``part-NNNNN.paths.txt`` (those images' paths, one a line, in row order); unreadable images
are listed on stderr and in ``part-NNNNN.done.json``. The exit code is 1 when any input failed.
"""

from __future__ import annotations

import io
import json
import math
import sys
from dataclasses import dataclass
from functools import partial

import numpy as np

from .. import validate
from ..batch import cached_model, expand_inputs, forward_records, run_shards, split
from ..train import pool_endpoint
from .errors import report
from .predict import (add_batch_arguments, check_model, engine, progress, run_to_folder,
                      shard_size)

SUFFIXES = ("npy", "paths.txt")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed", help="features of images (pooled, or any end point) with a model file",
        description="Preprocess each image as the model file says and write its features: the "
                    "pooled features by default (headless models too), or --endpoint NAME's "
                    "activation flattened. INPUT: an image file, a folder (recursive), a glob "
                    "pattern, or @LIST. Without --out: one JSON line per image on stdout. "
                    "Unreadable images get an error record and exit code 1.")
    parser.add_argument("--weights", required=True, metavar="FILE", help="model file")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders, globs or @LIST")
    parser.add_argument("--endpoint", metavar="NAME", default=None,
                        help="the node whose output to write (default: the pooled features)")
    add_batch_arguments(parser, out="write the embeddings as shards DIR/part-NNNNN.npy with "
                                    "part-NNNNN.paths.txt instead of JSON lines on stdout; a "
                                    "rerun skips the finished shards")
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class Options:
    """What a worker needs to embed a shard."""
    weights: str
    endpoint: str
    batch_size: int
    decode_threads: int


def embed_shard(options: Options, entries: list) -> list:
    """The records of one shard, ``(path, float32 vector, None)`` or ``(path, None, error)``:
    the same function in this process and on a worker."""
    model, lock = cached_model(options.weights)

    def take(model, output):
        values = model.end_points[options.endpoint].data
        rows = values.reshape(len(values), -1)
        return [row.copy() if np.isfinite(row).all() else None for row in rows]

    return forward_records(model, lock, entries, options.batch_size, options.decode_threads, take,
                           end_points=(options.endpoint,))


def render(width: int, records: list) -> dict[str, bytes]:
    """A shard's files: the readable images' vectors (``width`` wide) and their paths."""
    rows = [(path, vector) for path, vector, error in records if error is None]
    for path, _ in rows:
        if "\n" in path or "\r" in path:
            raise ValueError(f"{validate.show(path)}: a path with a line break cannot be listed "
                             f"in paths.txt")
    array = np.stack([v for _, v in rows]) if rows else np.zeros((0, width), np.float32)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    paths = "".join(f"{path}\n" for path, _ in rows)
    return {"npy": buffer.getvalue(), "paths.txt": paths.encode("utf8")}


def endpoint_of(model, weights: str, name: str | None) -> str:
    """``name`` checked against the model's end points, or the pooled features' node."""
    nodes = [node.name for node in model.graph.nodes]
    if name is None:
        try:
            return pool_endpoint(model)
        except ValueError:
            raise ValueError(f"{weights}: the model has no pooled features (no pool node); name an "
                             f"end point with --endpoint, e.g. {model.graph.output}") from None
    if name not in nodes:
        raise ValueError(f"--endpoint {validate.show(name)}: not an end point of {weights}; "
                         f"its end points are {validate.show(nodes)}")
    return name


def run(args) -> int:
    model = check_model(args.weights, "embed")
    endpoint = endpoint_of(model, args.weights, args.endpoint)
    options = Options(args.weights, endpoint, args.batch_size, args.decode_threads)
    compute = partial(embed_shard, options)
    entries = list(expand_inputs(args.inputs))
    if args.out is not None:
        width = math.prod(model.graph.node(endpoint).out_shape)
        return run_to_folder(args, entries, {"command": "embed", "endpoint": endpoint}, compute,
                             partial(render, width), SUFFIXES, "embedded")
    failed = 0
    with engine(args) as runner, progress(args, len(entries)) as bar:
        for records in run_shards(runner, compute, split(entries, shard_size(args)), progress=bar):
            for path, vector, error in records:
                failed += error is not None
                line = {"path": path, "error": error} if error is not None else \
                    {"path": path, "embedding": vector.tolist()}
                print(json.dumps(line))
            sys.stdout.flush()
    if failed:
        report(f"{failed} of {len(entries)} inputs could not be embedded (see their error records)")
    return 1 if failed else 0

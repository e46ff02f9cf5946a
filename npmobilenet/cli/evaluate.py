"""``npmobilenet evaluate --weights FILE --data DIR``: top-1, top-5, per-class accuracy, confusion.

Labels come from the model's class names: ``--labels FILE`` (one name a line, index order) if
given, else the names the model file stores, else a checked ``class_indices.json`` beside the
weights (as training runs record them). A model without names is refused rather than scored against the
folder's sorted names, and a class folder the model does not know is refused, naming it.

The samples are scored ``--shard-size`` at a time, in this process or on Dask (``--workers``,
``--scheduler``), and the shards' counts and confusion matrices summed (:func:`merge`).
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..batch import cached_model, split
from ..data import EvalTransform, ImageFolder, Loader, cifar10, class_index, digits, stratified_split
from ..io import load
from ..io.labels import model_class_names
from ..train import evaluate
from .arguments import integer, number
from .predict import add_batch_arguments, engine, progress, shard_size
from .train import BUILTIN_DIGITS, CIFAR10, data_kind


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="accuracy of a model file on an image folder",
        description="Evaluate a model file on DIR (one subfolder per class, named as the model's "
                    "classes; a subset of them is fine), cifar10:DIR (its test batch) or "
                    "builtin:digits. Top-5 is reported for models of more than 5 classes only.")
    p.add_argument("--weights", required=True, metavar="FILE", help="model file")
    p.add_argument("--data", required=True, help=f"image folder, {CIFAR10}DIR, or {BUILTIN_DIGITS}")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="the model's class names, one a line in index order (default: those the "
                        "model file stores, or class_indices.json beside it)")
    p.add_argument("--val-split", type=number(0, 1, low_open=True, high_open=True), default=None,
                   metavar="FRACTION",
                   help="evaluate only the images `train --val-split FRACTION --seed SEED` held out")
    p.add_argument("--seed", type=integer(0), default=0, help="the training run's seed (with --val-split)")
    add_batch_arguments(p, out=None)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON (top5 null for 5 "
                                                       "classes or fewer)")
    p.set_defaults(func=run)


def _dataset(args, model, indices: dict[str, int]):
    kind = data_kind(args.data)
    if kind == "cifar10":
        if args.val_split is not None:
            raise ValueError("--val-split does not apply to cifar10: it is evaluated on its test batch")
        return cifar10(args.data[len(CIFAR10):], indices)[1]
    data = digits(model.preprocess["crop"], indices) if kind == "digits" else ImageFolder(args.data, indices)
    if args.val_split is not None:
        data = data.subset(stratified_split(data.labels(), args.val_split, args.seed)[1])
    return data


@dataclass(frozen=True)
class Options:
    """What a worker needs to score a shard."""
    weights: str
    num_classes: int
    batch_size: int
    decode_threads: int


def evaluate_shard(options: Options, data, indices) -> tuple[dict | None, int, list[str]]:
    """The metrics of ``data``'s samples ``indices`` (None when none could be read), the count of
    unreadable ones and their warnings: the same function in this process and on a worker."""
    model, lock = cached_model(options.weights)
    loader = Loader(data.subset(indices), EvalTransform(model.preprocess), options.batch_size,
                    workers=options.decode_threads)
    with warnings.catch_warnings(record=True) as caught, lock:
        warnings.simplefilter("always")
        try:
            metrics = evaluate(model, loader, options.num_classes)
        except ValueError:
            if loader.skipped < len(indices):
                raise
            metrics = None  # every image of the shard was unreadable
    return metrics, loader.skipped, [str(warning.message) for warning in caught]


def merge(parts: list[dict | None], num_classes: int) -> dict:
    """The metrics of all shards from each shard's (as :func:`npmobilenet.train.evaluate` gives
    them): counts and the confusion matrix add up, the loss is weighted by images."""
    parts = [part for part in parts if part is not None]
    if not parts:
        raise ValueError("evaluate: the data gave no readable images")
    count = sum(part["images"] for part in parts)
    confusion = np.sum([part["confusion"] for part in parts], axis=0, dtype=np.int64)
    totals = confusion.sum(axis=1)
    top5 = None
    if num_classes > 5:
        top5 = sum(round(part["top5"] * part["images"]) for part in parts) / count
    return {"loss": sum(part["loss"] * part["images"] for part in parts) / count,
            "top1": float(np.trace(confusion) / count), "top5": top5,
            "per_class": [float(hits / total) if total else None
                          for hits, total in zip(np.diag(confusion), totals)],
            "confusion": confusion.tolist(), "images": count}


def run(args) -> int:
    model = load(args.weights)
    if model.preprocess is None:
        raise ValueError(f"{args.weights}: the model file has no preprocessing preset")
    if model.graph.options.num_classes == 0:
        raise ValueError(f"{args.weights}: a headless model (it returns features, not classes); "
                         f"train a head on it first: npmobilenet train --weights {args.weights} --data DIR")
    num_classes = model.graph.options.num_classes
    names = model_class_names(model, args.weights, args.labels, required=True)
    source = "class names" if args.labels is None else args.labels  # the names' origin, for errors
    data = _dataset(args, model, class_index(names, source))
    options = Options(args.weights, num_classes, args.batch_size, args.decode_threads)
    shards = split(range(len(data)), shard_size(args))
    parts, skipped = [None] * len(shards), 0
    with engine(args) as runner, progress(args, len(data)) as bar:
        shared = runner.share(data)
        items = [(k, (shared, shard)) for k, shard in enumerate(shards)]
        for k, (part, unreadable, messages) in runner.map(partial(evaluate_shard, options), items):
            parts[k], skipped = part, skipped + unreadable
            for message in messages:  # one notice a line, from whichever process met it
                print(f"npmobilenet: {message}", file=sys.stderr, flush=True)
            if bar is not None:
                bar.update(len(shards[k]))
    metrics = merge(parts, num_classes)
    metrics["skipped_images"] = skipped
    if args.json:
        print(json.dumps(metrics), flush=True)
        return 0
    top5 = "n/a (5 classes or fewer)" if metrics["top5"] is None else f"{metrics['top5']:.4f}"
    print(f"{metrics['images']} images: top-1 {metrics['top1']:.4f}, top-5 {top5}, "
          f"loss {metrics['loss']:.4f}" + (f", {skipped} unreadable skipped" if skipped else ""))
    print("per-class accuracy:")
    for index, name in enumerate(names):
        accuracy = metrics["per_class"][index]
        print(f"  {name:>12s}  " + ("no images" if accuracy is None else f"{accuracy:.4f}"))
    print("confusion matrix (rows: true class, columns: predicted):")
    for index, name in enumerate(names):
        print(f"  {name:>12s}  " + " ".join(f"{v:4d}" for v in metrics["confusion"][index]))
    return 0

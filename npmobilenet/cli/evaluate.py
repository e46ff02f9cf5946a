"""``npmobilenet evaluate --weights FILE --data DIR``: top-1, top-5, per-class accuracy, confusion.

Labels come from the model's class names: ``--labels FILE`` (one name a line, index order) if
given, else the names the model file stores, else a checked ``class_indices.json`` beside the
weights (as training runs record them). A model without names is refused rather than scored against the
folder's sorted names, and a class folder the model does not know is refused, naming it.
"""

from __future__ import annotations

import json

from ..data import (MAX_WORKERS, EvalTransform, ImageFolder, Loader, cifar10, class_index, digits,
                    stratified_split)
from ..io import load
from ..io.labels import model_class_names
from ..train import evaluate
from .arguments import MAX_BATCH, integer, number
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
    p.add_argument("--batch-size", type=integer(1, MAX_BATCH), default=32, metavar="N",
                   help=f"images per batch, in [1, {MAX_BATCH}]")
    p.add_argument("--workers", type=integer(1, MAX_WORKERS), default=2, metavar="N",
                   help=f"image decoding threads, in [1, {MAX_WORKERS}]")
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
    loader = Loader(data, EvalTransform(model.preprocess), args.batch_size, workers=args.workers)
    metrics = evaluate(model, loader, num_classes)
    metrics["skipped_images"] = loader.skipped
    if args.json:
        print(json.dumps(metrics), flush=True)
        return 0
    top5 = "n/a (5 classes or fewer)" if metrics["top5"] is None else f"{metrics['top5']:.4f}"
    print(f"{metrics['images']} images: top-1 {metrics['top1']:.4f}, top-5 {top5}, "
          f"loss {metrics['loss']:.4f}" + (f", {loader.skipped} unreadable skipped" if loader.skipped else ""))
    print("per-class accuracy:")
    for index, name in enumerate(names):
        accuracy = metrics["per_class"][index]
        print(f"  {name:>12s}  " + ("no images" if accuracy is None else f"{accuracy:.4f}"))
    print("confusion matrix (rows: true class, columns: predicted):")
    for index, name in enumerate(names):
        print(f"  {name:>12s}  " + " ".join(f"{v:4d}" for v in metrics["confusion"][index]))
    return 0

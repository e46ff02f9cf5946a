"""``npmobilenet evaluate --weights FILE --data DIR``: top-1, top-5, per-class accuracy, confusion.

Labels come from the model's class names: ``--labels FILE`` (one name a line, index order) if
given, else the names the model file stores, else a checked ``class_indices.json`` beside the
weights (as training runs record them). A model without names is refused rather than scored against the
folder's sorted names, and a class folder the model does not know is refused, naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data import (MAX_WORKERS, EvalTransform, ImageFolder, Loader, class_index, digits,
                    read_class_indices, stratified_split)
from ..io import class_names, load
from ..train import evaluate
from .arguments import MAX_BATCH, integer, number
from .train import BUILTIN_DIGITS, HelpFormatter


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="accuracy of a model file on an image folder", formatter_class=HelpFormatter,
        description="Evaluate a model file on DIR (one subfolder per class, named as the model's "
                    "classes) or builtin:digits.")
    p.add_argument("--weights", required=True, metavar="FILE", help="model file")
    p.add_argument("--data", required=True, help=f"image folder, or {BUILTIN_DIGITS}")
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
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def _class_names(model, args) -> list[str]:
    """The model's class names in index order: ``--labels``, stored, or class_indices.json."""
    num_classes = model.graph.options.num_classes
    if args.labels is not None:
        return class_names(num_classes, args.labels)
    if model.class_names is not None:
        return model.class_names
    beside = Path(args.weights).parent / "class_indices.json"
    if beside.exists():
        return read_class_indices(beside, num_classes)
    raise ValueError(f"{args.weights}: the model file stores no class names, so its outputs cannot "
                     f"be matched to class folders; give them with --labels FILE (one a line, in "
                     f"index order)")


def run(args) -> int:
    model = load(args.weights)
    if model.preprocess is None:
        raise ValueError(f"{args.weights}: the model file has no preprocessing preset")
    num_classes = model.graph.options.num_classes
    indices = class_index(_class_names(model, args), args.labels or "class names")
    if args.data == BUILTIN_DIGITS:
        data = digits(model.preprocess["crop"], indices)
    else:
        data = ImageFolder(args.data, indices)
    if args.val_split is not None:
        data = data.subset(stratified_split(data.labels(), args.val_split, args.seed)[1])
    loader = Loader(data, EvalTransform(model.preprocess), args.batch_size, workers=args.workers)
    metrics = evaluate(model, loader, num_classes)
    metrics["skipped_images"] = loader.skipped
    if args.json:
        print(json.dumps(metrics))
        return 0
    names = sorted(data.class_indices, key=data.class_indices.get)
    print(f"{metrics['images']} images: top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}, "
          f"loss {metrics['loss']:.4f}" + (f", {loader.skipped} unreadable skipped" if loader.skipped else ""))
    print("per-class accuracy:")
    for name in names:
        print(f"  {name:>12s}  {metrics['per_class'][data.class_indices[name]]:.4f}")
    print("confusion matrix (rows: true class, columns: predicted):")
    for name in names:
        row = metrics["confusion"][data.class_indices[name]]
        print(f"  {name:>12s}  " + " ".join(f"{v:4d}" for v in row[:len(names)]))
    return 0

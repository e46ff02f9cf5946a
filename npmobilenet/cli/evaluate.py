"""``npmobilenet evaluate --weights FILE --data DIR``: top-1, top-5, per-class accuracy, confusion."""

from __future__ import annotations

import json
from pathlib import Path

from ..data import EvalTransform, ImageFolder, Loader, digits, stratified_split
from ..io import load
from ..train import evaluate
from .train import BUILTIN_DIGITS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="accuracy of a model file on an image folder",
        description="Evaluate a model file on DIR (one subfolder per class, named as in training: "
                    "class_indices.json beside the weights gives the labels) or builtin:digits.")
    p.add_argument("--weights", required=True, metavar="FILE", help="model file")
    p.add_argument("--data", required=True, help=f"image folder, or {BUILTIN_DIGITS}")
    p.add_argument("--val-split", type=float, default=None, metavar="FRACTION",
                   help="evaluate only the images `train --val-split FRACTION --seed SEED` held out")
    p.add_argument("--seed", type=int, default=0, help="the training run's seed (with --val-split)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    model = load(args.weights)
    if model.preprocess is None:
        raise ValueError(f"{args.weights}: the model file has no preprocessing preset")
    indices_file = Path(args.weights).parent / "class_indices.json"
    class_indices = json.loads(indices_file.read_text()) if indices_file.exists() else None
    if args.data == BUILTIN_DIGITS:
        data = digits(model.preprocess["crop"])
    else:
        data = ImageFolder(args.data, class_indices)
    if args.val_split is not None:
        data = data.subset(stratified_split(data.labels(), args.val_split, args.seed)[1])
    num_classes = model.graph.options.num_classes
    if len(data.class_indices) > num_classes:
        raise ValueError(f"{args.data}: {len(data.class_indices)} classes, the model has {num_classes}")
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

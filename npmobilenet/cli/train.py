"""``npmobilenet train``: train from scratch or fine-tune, on an image folder or built-in digits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..data import EvalTransform, ImageFolder, Loader, TrainTransform, digits, stratified_split
from ..io import load, preset
from ..model import build_model
from ..train import ArrayLoader, TrainConfig, Trainer, cache_features, pool_endpoint, replace_head

BUILTIN_DIGITS = "builtin:digits"
# The quickstart: a half-width MobileNet v1 on 48x48 digits, about 2 minutes on 2 cores.
DIGITS_DEFAULTS = {"spec": "mobilenet_v1", "depth_multiplier": 0.5, "input_size": 48, "epochs": 15}
FOLDER_DEFAULTS = {"spec": "mobilenet_v2", "depth_multiplier": 1.0, "input_size": 224, "epochs": 10}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune a MobileNet on an image folder or built-in digits",
        description="Train on DIR (one subfolder per class) or builtin:digits. Writes "
                    "last.safetensors (resumable), best.safetensors, metrics.csv/json, "
                    "class_indices.json and labels.txt into --out.")
    p.add_argument("--data", required=True, help=f"image folder, or {BUILTIN_DIGITS}")
    p.add_argument("--val", default=None, help="validation folder (default: hold out --val-split)")
    p.add_argument("--val-split", type=float, default=0.2, help="held-out fraction per class")
    p.add_argument("--out", default="runs/train", help="output folder")
    p.add_argument("--spec", default=None, help="built-in spec name or JSON path")
    p.add_argument("--depth-multiplier", type=float, default=None)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--weights", default=None, help="start from this model file (fine-tuning)")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the head")
    p.add_argument("--cache-features", action="store_true",
                   help="with --freeze-backbone: run the backbone once and train the head on its "
                        "features (no augmentation)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", choices=["sgd", "rmsprop", "adam"], default="sgd")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=4e-5)
    p.add_argument("--schedule", choices=["cosine", "exponential", "step", "constant"], default="cosine")
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--clip-norm", type=float, default=None, help="clip the gradients' global L2 norm")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep a moving average of the weights (e.g. 0.999); validate and save it as best")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="image decoding threads")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    p.add_argument("--export-samples", type=int, default=10, metavar="N",
                   help="write N held-out images, the classes in turn, to OUT/samples (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _datasets(args, size):
    """(train, validation) datasets, the class indices and the input preset."""
    if args.data == BUILTIN_DIGITS:
        data = digits(size)
        train_idx, val_idx = stratified_split(data.labels(), args.val_split, args.seed)
        normalise = {"name": "digits", "resize": size, "crop": size, "mean": [0.5] * 3, "std": [0.5] * 3}
        return data.subset(train_idx), data.subset(val_idx), normalise
    train = ImageFolder(args.data)
    if args.val is not None:
        val = ImageFolder(args.val, train.class_indices)
    else:
        train_idx, val_idx = stratified_split(train.labels(), args.val_split, args.seed)
        train, val = train.subset(train_idx), train.subset(val_idx)
    normalise = {**preset("torchvision"), "resize": round(size / 0.875), "crop": size}
    return train, val, normalise


def _trained_classes(weights) -> dict | None:
    """The class indices a model file was trained on (``class_indices.json`` beside it), if any:
    fine-tuning further on the same classes keeps the trained head."""
    path = Path(weights).parent / "class_indices.json"
    return json.loads(path.read_text()) if path.exists() else None


def _export_samples(dataset, out: Path, count: int) -> list[Path]:
    """Write ``count`` held-out images as ``OUT/samples/heldout_<i>_<class>.png``, taking the
    classes in turn (the first held-out image of each class, then the second...)."""
    folder = out / "samples"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    names = {v: k for k, v in dataset.class_indices.items()}
    labels = dataset.labels()
    by_class = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    rounds = max(len(members) for members in by_class)
    order = [members[r] for r in range(rounds) for members in by_class if r < len(members)]
    paths = []
    for i, index in enumerate(order[:count]):
        image, label = dataset.load(int(index))
        path = folder / f"heldout_{i}_{names[label]}.png"
        image.save(path)
        paths.append(path)
    return paths


def run(args) -> int:
    defaults = DIGITS_DEFAULTS if args.data == BUILTIN_DIGITS else FOLDER_DEFAULTS
    spec = args.spec or defaults["spec"]
    size = args.input_size or defaults["input_size"]
    config = TrainConfig(epochs=args.epochs or defaults["epochs"], optimizer=args.optimizer, lr=args.lr,
                         momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                         warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
                         clip_norm=args.clip_norm, ema_decay=args.ema, seed=args.seed)
    train_set, val_set, normalise = _datasets(args, size)
    num_classes = len(train_set.class_indices)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.weights:
        model = load(args.weights)
        if _trained_classes(args.weights) != train_set.class_indices:
            model = replace_head(model, num_classes, seed=args.seed)
        if model.preprocess is not None:  # the weights' normalisation and resize/crop ratio, at `size`
            ratio = model.preprocess["resize"] / model.preprocess["crop"]
            normalise = {**model.preprocess, "resize": round(size * ratio), "crop": size}
    else:
        model = build_model(spec, depth_multiplier=args.depth_multiplier or defaults["depth_multiplier"],
                            input_size=size, num_classes=num_classes, global_pool=True, bn_momentum=0.1,
                            seed=args.seed)
    model.preprocess = normalise
    if args.freeze_backbone:
        model.freeze(trainable=("Logits",))

    digits_data = args.data == BUILTIN_DIGITS  # digits are not mirror-symmetric: no flips
    train_tf = TrainTransform(normalise, scale=(0.85, 1.0) if digits_data else (0.08, 1.0),
                              ratio=(0.9, 1.11) if digits_data else (3 / 4, 4 / 3), flip=not digits_data)
    train_loader = Loader(train_set, train_tf, args.batch_size, shuffle=True, seed=args.seed,
                          workers=args.workers)
    val_loader = Loader(val_set, EvalTransform(normalise), args.batch_size, workers=args.workers)
    forward = None
    if args.cache_features:
        if not args.freeze_backbone:
            raise ValueError("--cache-features needs --freeze-backbone (the cached backbone must not change)")
        endpoint = pool_endpoint(model)
        plain_train = Loader(train_set, EvalTransform(normalise), args.batch_size, workers=args.workers)
        train_loader = ArrayLoader(*cache_features(model, plain_train, endpoint), args.batch_size,
                                   shuffle=True, seed=args.seed)
        val_loader = ArrayLoader(*cache_features(model, val_loader, endpoint), args.batch_size)
        forward = lambda features: model.forward_from(endpoint, features)  # noqa: E731

    (out / "class_indices.json").write_text(json.dumps(train_set.class_indices, indent=1))
    names = sorted(train_set.class_indices, key=train_set.class_indices.get)
    (out / "labels.txt").write_text("\n".join(names) + "\n")
    trainer = Trainer(model, train_loader, val_loader, out, config, forward=forward, progress=not args.quiet)
    if args.resume:
        trainer.resume()
    print(f"training {model!r} on {len(train_set)} images, validating on {len(val_set)}")
    trainer.fit()
    print(f"best validation accuracy {trainer.best_top1:.4f}; model file {out / 'best.safetensors'}")
    if args.export_samples:
        samples = _export_samples(val_set, out, args.export_samples)
        print(f"{len(samples)} held-out images in {out / 'samples'} (true class last in the name); try:\n"
              f"  npmobilenet predict --weights {out / 'best.safetensors'} --labels {out / 'labels.txt'} "
              f"{out / 'samples'}/*.png")
    return 0

"""``npmobilenet train``: train from scratch or fine-tune, on an image folder or built-in digits.

Every numeric flag has a range, checked at parse time by the code the Python API uses
(:mod:`npmobilenet.validate`; the hyper-parameters' ranges are ``npmobilenet.train.RANGES``), so
a value out of range, or a warm-up longer than the run, is a usage error: exit 2. ``--workers``
counts image-decoding threads, at least 1 (there is no in-thread mode: one thread decoding a batch
ahead is what keeps the kernels fed). Values are passed on unchanged: 0 never means "default".
The output folder is locked while training, and a folder holding a run is only resumed
(``--resume``) or replaced (``--overwrite``): see :mod:`npmobilenet.runs`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from ..data import (MAX_WORKERS, EvalTransform, ImageFolder, Loader, TrainTransform, check_trainable,
                    digits, read_class_indices, stratified_split)
from ..io import load, preset
from ..model import build_model
from ..runs import SAMPLES, RunFolder
from ..train import (RANGES, ArrayLoader, TrainConfig, Trainer, cache_features, pool_endpoint,
                     replace_head)
from ..validate import LIMITS
from .arguments import MAX_BATCH, integer, number

BUILTIN_DIGITS = "builtin:digits"
# The quickstart: a half-width MobileNet v1 on 48x48 digits, about 2 minutes on 2 cores.
DIGITS_DEFAULTS = {"spec": "mobilenet_v1", "depth_multiplier": 0.5, "input_size": 48, "epochs": 15}
FOLDER_DEFAULTS = {"spec": "mobilenet_v2", "depth_multiplier": 1.0, "input_size": 224, "epochs": 10}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each flag's default, except for switches and for defaults that depend on
    the data (None; their help says what they are)."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def _per_data(name: str) -> str:
    return f"default {DIGITS_DEFAULTS[name]} for {BUILTIN_DIGITS}, {FOLDER_DEFAULTS[name]} for a folder"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune a MobileNet on an image folder or built-in digits",
        formatter_class=HelpFormatter,
        description="Train on DIR (one subfolder per class) or builtin:digits. Writes "
                    "last.safetensors (resumable), best.safetensors, metrics.csv/json, "
                    "class_indices.json and labels.txt into --out, which is locked while training.")
    p.add_argument("--data", required=True, help=f"image folder, or {BUILTIN_DIGITS}")
    p.add_argument("--val", default=None, help="validation folder (default: hold out --val-split)")
    p.add_argument("--val-split", type=number(0, 1, low_open=True, high_open=True), default=0.2,
                   metavar="FRACTION", help="held-out fraction per class, in (0, 1)")
    p.add_argument("--out", default="runs/train", help="output folder")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="continue the run in --out from its last.safetensors (same settings; "
                               "more --epochs allowed)")
    existing.add_argument("--overwrite", action="store_true",
                          help="replace the run --out holds (its checkpoints, metrics and samples)")
    p.add_argument("--spec", default=None, help=f"built-in spec name or JSON path ({_per_data('spec')})")
    p.add_argument("--depth-multiplier", type=number(0, LIMITS["multiplier"], low_open=True),
                   default=None, metavar="A", help=f"width multiplier ({_per_data('depth_multiplier')})")
    p.add_argument("--input-size", type=integer(1, LIMITS["image_side"]), default=None, metavar="N",
                   help=f"input height and width ({_per_data('input_size')})")
    p.add_argument("--weights", default=None, help="start from this model file (fine-tuning)")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the head")
    p.add_argument("--cache-features", action="store_true",
                   help="with --freeze-backbone: run the backbone once and train the head on its "
                        "features (no augmentation)")
    p.add_argument("--epochs", type=integer(**RANGES["epochs"]), default=None, metavar="N",
                   help=f"epochs, >= 1 ({_per_data('epochs')})")
    p.add_argument("--batch-size", type=integer(1, MAX_BATCH), default=32, metavar="N",
                   help=f"images per step, in [1, {MAX_BATCH}]")
    p.add_argument("--optimizer", choices=["sgd", "rmsprop", "adam"], default="sgd", help="optimizer")
    p.add_argument("--lr", type=number(**RANGES["lr"]), default=0.05, help="learning rate, > 0")
    p.add_argument("--momentum", type=number(**RANGES["momentum"]), default=0.9,
                   help="momentum of sgd and rmsprop, in [0, 1)")
    p.add_argument("--weight-decay", type=number(**RANGES["weight_decay"]), default=4e-5,
                   help="L2 weight decay (not on depthwise, batch-norm and bias parameters), >= 0")
    p.add_argument("--schedule", choices=["cosine", "exponential", "step", "constant"], default="cosine",
                   help="learning-rate schedule")
    p.add_argument("--warmup-epochs", type=number(**RANGES["warmup_epochs"]), default=0.0, metavar="E",
                   help="linear learning-rate warm-up, in [0, epochs]")
    p.add_argument("--label-smoothing", type=number(**RANGES["label_smoothing"]), default=0.0,
                   help="label smoothing, in [0, 1)")
    p.add_argument("--clip-norm", type=number(**RANGES["clip_norm"]), default=None, metavar="NORM",
                   help="clip the gradients' global L2 norm to NORM, > 0 (default: no clipping)")
    p.add_argument("--ema", type=number(**RANGES["ema_decay"]), default=None, metavar="DECAY",
                   help="keep a moving average of the weights, decay in (0, 1), e.g. 0.999; "
                        "validate and save it as best (default: off)")
    p.add_argument("--seed", type=integer(**RANGES["seed"]), default=0,
                   help="seed of the initialisation, split, shuffling and augmentation, >= 0")
    p.add_argument("--workers", type=integer(1, MAX_WORKERS), default=2, metavar="N",
                   help=f"image decoding threads, in [1, {MAX_WORKERS}]")
    p.add_argument("--export-samples", type=integer(0), default=10, metavar="N",
                   help="write N held-out images, the classes in turn, to OUT/samples (0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--trace", metavar="FILE", help="write an op trace to FILE (.json, .dot or a table)")
    p.set_defaults(func=run, usage_error=p.error)


def _datasets(args, size):
    """(train, validation) datasets and the input preset; data a classifier cannot learn from is
    refused, saying why."""
    if args.data == BUILTIN_DIGITS:
        data = digits(size)
        train_idx, val_idx = stratified_split(data.labels(), args.val_split, args.seed)
        normalise = {"name": "digits", "resize": size, "crop": size, "mean": [0.5] * 3, "std": [0.5] * 3}
        return data.subset(train_idx), data.subset(val_idx), normalise
    train = ImageFolder(args.data)
    check_trainable(train, args.data, held_out=args.val is None)
    if args.val is not None:
        val = ImageFolder(args.val, train.class_indices)
    else:
        train_idx, val_idx = stratified_split(train.labels(), args.val_split, args.seed)
        train, val = train.subset(train_idx), train.subset(val_idx)
    normalise = {**preset("torchvision"), "resize": round(size / 0.875), "crop": size}
    return train, val, normalise


def _trained_classes(weights, model) -> list[str] | None:
    """The classes a model file was trained on, in index order: its stored names, else those of
    ``class_indices.json`` beside it, if any. Fine-tuning further on the same classes keeps the
    trained head."""
    if model.class_names is not None:
        return model.class_names
    path = Path(weights).parent / "class_indices.json"
    return read_class_indices(path, model.graph.options.num_classes) if path.exists() else None


def _export_samples(dataset, out: Path, count: int) -> list[Path]:
    """Write ``count`` held-out images as ``OUT/samples/heldout_<i>_<class>.png``, taking the
    classes in turn (the first held-out image of each class, then the second...)."""
    folder = out / SAMPLES
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
    chosen = {name: default if getattr(args, name) is None else getattr(args, name)
              for name, default in defaults.items()}
    try:
        config = TrainConfig(epochs=chosen["epochs"], optimizer=args.optimizer, lr=args.lr,
                             momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                             warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
                             clip_norm=args.clip_norm, ema_decay=args.ema, seed=args.seed)
    except ValueError as error:  # flags in range one by one, not together (--warmup-epochs > --epochs)
        args.usage_error(str(error))
    datasets = _datasets(args, chosen["input_size"])  # bad data: refused before --out is made
    with RunFolder(args.out).lock() as folder:
        folder.claim(resume=args.resume, overwrite=args.overwrite)
        return _train(args, config, chosen, datasets, folder)


def _train(args, config: TrainConfig, chosen: dict, datasets, folder: RunFolder) -> int:
    """Build the model, train it into ``folder`` (locked and claimed), export samples."""
    size, out = chosen["input_size"], folder.path
    train_set, val_set, normalise = datasets
    names = sorted(train_set.class_indices, key=train_set.class_indices.get)
    if args.weights:
        model = load(args.weights)
        if _trained_classes(args.weights, model) != names:
            model = replace_head(model, len(names), seed=args.seed)
        if model.preprocess is not None:  # the weights' normalisation and resize/crop ratio, at `size`
            ratio = model.preprocess["resize"] / model.preprocess["crop"]
            normalise = {**model.preprocess, "resize": round(size * ratio), "crop": size}
    else:
        model = build_model(chosen["spec"], depth_multiplier=chosen["depth_multiplier"], input_size=size,
                            num_classes=len(names), global_pool=True, bn_momentum=0.1, seed=args.seed)
    model.preprocess, model.class_names = normalise, names
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

    trainer = Trainer(model, train_loader, val_loader, folder, config, forward=forward,
                      progress=not args.quiet)
    if args.resume:
        trainer.resume()
    print(f"training {model!r} on {len(train_set)} images, validating on {len(val_set)}")
    trainer.fit()
    print(f"best validation accuracy {trainer.best_top1:.4f}; model file {out / 'best.safetensors'}")
    if args.export_samples:
        samples = _export_samples(val_set, out, args.export_samples)
        print(f"{len(samples)} held-out images in {out / SAMPLES} (true class last in the name); try:\n"
              f"  npmobilenet predict --weights {out / 'best.safetensors'} --labels {out / 'labels.txt'} "
              f"{out / SAMPLES}/*.png")
    return 0

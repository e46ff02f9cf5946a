"""``npmobilenet train``: train from scratch or fine-tune, on an image folder or built-in digits.

Every numeric flag has a range, checked at parse time by the code the Python API uses
(:mod:`npmobilenet.validate`; the hyper-parameters' ranges are ``npmobilenet.train.RANGES``), so
a value out of range, or a warm-up longer than the run, is a usage error: exit 2. ``--workers``
counts image-decoding threads, at least 1 (there is no in-thread mode: one thread decoding a batch
ahead is what keeps the kernels fed). Values are passed on unchanged: 0 never means "default".
The output folder is locked while training, and a folder holding a run is only resumed
(``--resume``) or replaced (``--overwrite``): see :mod:`npmobilenet.runs`.

``--distributed`` (under ``mpiexec -n N``) trains data-parallel: see :mod:`npmobilenet.train`.
Every process runs this command; process 0 prints and writes. An error every process meets
(bad data, a busy --out, divergence) is printed once, by process 0; one met by a single
process is printed by it, naming it, and ends the whole run (``MPI_Abort``), as the others
would otherwise wait for it forever.
"""

from __future__ import annotations

import argparse
import shutil
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..data import (MAX_WORKERS, EvalTransform, ImageFolder, Loader, TrainTransform, check_trainable,
                    cifar10, digits, stratified_split)
from ..distributed import Communicator, world
from ..io import load, preset
from ..io.labels import read_class_indices
from ..model import build_model
from ..runs import SAMPLES, RunFolder
from ..train import (RANGES, RMSPROP_STARTS, ArrayLoader, TrainConfig, Trainer, cache_features,
                     pool_endpoint, replace_head, with_options)
from ..validate import LIMITS
from .arguments import MAX_BATCH, integer, number
from .errors import describe, report

BUILTIN_DIGITS = "builtin:digits"
CIFAR10 = "cifar10:"  # followed by the folder holding (or being) cifar-10-batches-{bin,py}
VAL_SPLIT = 0.2
TINY = 64  # inputs below this many pixels a side get the augmentation of small images
# Per kind of data, the value of each flag left unset. The quickstart: a half-width MobileNet v1
# on 48x48 digits. Digits are not mirror-symmetric (no flips) and fill their frame (no resize
# margin, crops of at least 70% of the area, near-square: 98.9% held out, against 97.2% at 85%).
DATA_DEFAULTS = {
    "digits": {"spec": "mobilenet_v1", "depth_multiplier": 0.5, "input_size": 48, "epochs": 15,
               "flip": False, "crop_scale": 0.7, "resize_ratio": 1.0},
    "cifar10": {"spec": "mobilenet_v1", "depth_multiplier": 1.0, "input_size": 32, "epochs": 10, "flip": True},
    "folder": {"spec": "mobilenet_v2", "depth_multiplier": 1.0, "input_size": 224, "epochs": 10, "flip": True},
}
ASPECTS = {"digits": (0.9, 1.11)}  # random-crop aspect range; others (3/4, 4/3)
# Inception-style crops (down to 8% of the area) and a 224/256 centre crop suit photos of 128
# pixels and more; a small image has no detail to spare: crops of at least half the area, and
# evaluation sees the whole image.
LARGE_AUGMENTATION = {"crop_scale": 0.08, "resize_ratio": 256 / 224}
TINY_AUGMENTATION = {"crop_scale": 0.5, "resize_ratio": 1.0}


def data_kind(data: str) -> str:
    """``"digits"``, ``"cifar10"`` or ``"folder"`` for a --data value."""
    if data == BUILTIN_DIGITS:
        return "digits"
    return "cifar10" if data.startswith(CIFAR10) else "folder"


def _per_data(name: str) -> str:
    values = {kind: defaults[name] for kind, defaults in DATA_DEFAULTS.items()}
    return (f"default {values['digits']} for {BUILTIN_DIGITS}, {values['cifar10']} for {CIFAR10}DIR, "
            f"{values['folder']} for a folder")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune a MobileNet on an image folder, CIFAR-10 or built-in digits",
        description="Train on DIR (one subfolder per class), cifar10:DIR (the official CIFAR-10 "
                    "batches, binary or Python layout; validated on its test batch) or "
                    "builtin:digits. Writes last.safetensors (resumable), best.safetensors (with the "
                    "class names), metrics.csv/json, class_indices.json and labels.txt into --out, "
                    "which is locked while training.")
    p.add_argument("--data", required=True, help=f"image folder, {CIFAR10}DIR, or {BUILTIN_DIGITS}")
    p.add_argument("--val", default=None, help="validation folder (default: hold out --val-split)")
    p.add_argument("--val-split", type=number(0, 1, low_open=True, high_open=True), default=None,
                   metavar="FRACTION", help=f"held-out fraction per class, in (0, 1) (default "
                                            f"{VAL_SPLIT}; CIFAR-10 validates on its test batch)")
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
    p.add_argument("--bn-momentum", type=number(0, 1, low_open=True), default=None, metavar="M",
                   help="batch-norm momentum, in (0, 1], torch's convention (TF's decay is 1 - M) "
                        "(default: the model's: 0.1 for every built-in spec; a --weights file keeps "
                        "its own)")
    p.add_argument("--epochs", type=integer(**RANGES["epochs"]), default=None, metavar="N",
                   help=f"epochs, >= 1 ({_per_data('epochs')})")
    p.add_argument("--batch-size", type=integer(1, MAX_BATCH), default=32, metavar="N",
                   help=f"images per step, in [1, {MAX_BATCH}]")
    p.add_argument("--optimizer", choices=["sgd", "rmsprop", "adam"], default="sgd", help="optimizer")
    p.add_argument("--lr", type=number(**RANGES["lr"]), default=None,
                   help="learning rate, > 0 (default: 0.05 for sgd, 0.045 for rmsprop, 0.001 for adam)")
    p.add_argument("--momentum", type=number(**RANGES["momentum"]), default=0.9,
                   help="momentum of sgd and rmsprop, in [0, 1)")
    p.add_argument("--rho", type=number(**RANGES["rho"]), default=None,
                   help="rmsprop: decay of the mean square, in [0, 1) (default 0.9)")
    p.add_argument("--eps", type=number(**RANGES["eps"]), default=None,
                   help="rmsprop and adam: epsilon, > 0 (default 1.0 for rmsprop, as TF's MobileNet "
                        "recipe, inside the square root; 1e-8 for adam)")
    p.add_argument("--rmsprop-start", choices=sorted(RMSPROP_STARTS), default=None,
                   help="rmsprop: where the mean-square accumulator starts: tf at 1 (TF1, the "
                        "paper's runs), keras at 0 (default tf)")
    p.add_argument("--weight-decay", type=number(**RANGES["weight_decay"]), default=4e-5,
                   help="L2 weight decay (not on depthwise, batch-norm and bias parameters), >= 0")
    p.add_argument("--schedule", choices=["cosine", "exponential", "step", "constant"], default="cosine",
                   help="learning-rate schedule (exponential: x0.94 every 2 epochs)")
    p.add_argument("--warmup-epochs", type=number(**RANGES["warmup_epochs"]), default=0.0, metavar="E",
                   help="linear learning-rate warm-up, in [0, epochs]")
    p.add_argument("--label-smoothing", type=number(**RANGES["label_smoothing"]), default=0.0,
                   help="label smoothing, in [0, 1)")
    p.add_argument("--crop-scale", type=number(0, 1, low_open=True), default=None, metavar="MIN",
                   help=f"training crops cover a random fraction in [MIN, 1] of the image's area, "
                        f"MIN in (0, 1]; 1 for no random crop (default "
                        f"{LARGE_AUGMENTATION['crop_scale']} for inputs of {TINY} pixels or more, "
                        f"{TINY_AUGMENTATION['crop_scale']} below, "
                        f"{DATA_DEFAULTS['digits']['crop_scale']} for digits)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips in training (default: on, off for digits)")
    p.add_argument("--resize-ratio", type=number(1, 8), default=None, metavar="R",
                   help=f"evaluation resizes the shorter side to R x the input size, then crops the "
                        f"centre, R in [1, 8]; 1 sees the whole image (default "
                        f"{LARGE_AUGMENTATION['resize_ratio']:.4g} (256/224) for inputs of {TINY} "
                        f"pixels or more, 1 below and for digits; a --weights file's own for larger "
                        f"inputs)")
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
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over the processes of mpiexec (mpiexec -n N "
                        "npmobilenet train --distributed ...): each takes a share of every batch; "
                        'needs pip install "npmobilenet[mpi]"')
    p.add_argument("--sync-bn", action="store_true",
                   help="with --distributed: batch norm uses the whole batch's statistics, so the "
                        "run equals one process's (without it each process normalises its share)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--trace", metavar="FILE", help="write an op trace to FILE (.json, .dot or a table)")
    p.set_defaults(func=run, usage_error=p.error)


def _datasets(args, size):
    """(train, validation) datasets and the normalisation; data a classifier cannot learn from is
    refused, saying why."""
    kind = data_kind(args.data)
    if kind == "cifar10":
        if args.val is not None or args.val_split is not None:
            args.usage_error("--val and --val-split do not apply to cifar10: it validates on its "
                             "test batch")
        train, val = cifar10(args.data[len(CIFAR10):])
        check_trainable(train, args.data, held_out=False)
        return train, val, preset("torchvision")
    split = VAL_SPLIT if args.val_split is None else args.val_split
    if kind == "digits":
        data = digits(size)
        train_idx, val_idx = stratified_split(data.labels(), split, args.seed)
        normalise = {"name": "digits", "resize": size, "crop": size, "mean": [0.5] * 3, "std": [0.5] * 3}
        return data.subset(train_idx), data.subset(val_idx), normalise
    train = ImageFolder(args.data)
    check_trainable(train, args.data, held_out=args.val is None)
    if args.val is not None:
        val = ImageFolder(args.val, train.class_indices)
    else:
        train_idx, val_idx = stratified_split(train.labels(), split, args.seed)
        train, val = train.subset(train_idx), train.subset(val_idx)
    return train, val, preset("torchvision")


def _augmentation(args, kind: str, size: int) -> dict:
    """The crop scale, flip and evaluation resize ratio: the flags, else the data's defaults,
    else those of the input size (see TINY)."""
    defaults = {**(TINY_AUGMENTATION if size < TINY else LARGE_AUGMENTATION), **DATA_DEFAULTS[kind]}
    return {name: defaults[name] if getattr(args, name) is None else getattr(args, name)
            for name in ("crop_scale", "flip", "resize_ratio")}


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
    if args.sync_bn and not args.distributed:
        args.usage_error("--sync-bn needs --distributed")
    comm = world() if args.distributed else Communicator()
    try:
        return _run(args, comm)
    except Exception as error:
        if comm.size == 1:
            raise
        message, code = describe(error)
        if error is not comm.agreed:  # this process's alone: end the run, the others would wait
            report(f"process {comm.rank} of {comm.size}: {message}")
            comm.abort(code)
        if comm.root:
            raise
        return code  # process 0 reports it


def _run(args, comm: Communicator) -> int:
    kind = data_kind(args.data)
    chosen = {name: DATA_DEFAULTS[kind][name] if getattr(args, name) is None else getattr(args, name)
              for name in ("spec", "depth_multiplier", "input_size", "epochs")}
    try:
        config = TrainConfig(epochs=chosen["epochs"], optimizer=args.optimizer, lr=args.lr,
                             momentum=args.momentum, rho=args.rho, eps=args.eps,
                             rmsprop_start=args.rmsprop_start, weight_decay=args.weight_decay,
                             schedule=args.schedule, warmup_epochs=args.warmup_epochs,
                             label_smoothing=args.label_smoothing, clip_norm=args.clip_norm,
                             ema_decay=args.ema, seed=args.seed)
    except ValueError as error:  # flags in range one by one, not together (--warmup-epochs > --epochs)
        args.usage_error(str(error))
    # bad data: refused before --out is made
    datasets = comm.agree(lambda: _datasets(args, chosen["input_size"]))
    folder = RunFolder(args.out)
    with ExitStack() as held:
        comm.agree(lambda: _claim(folder, args, held) if comm.root else None)
        return _train(args, config, chosen, datasets, folder, comm)


def _claim(folder: RunFolder, args, held: ExitStack) -> None:
    """Lock ``folder`` for the rest of the run and claim it."""
    held.enter_context(folder.lock())
    folder.claim(resume=args.resume, overwrite=args.overwrite)


def _model(args, chosen: dict, names: list[str], normalise: dict, ratio: float | None):
    """The model to train: the --weights file (its head replaced for other classes) or a new one,
    with its preprocessing at the input size; ``ratio`` None keeps the file's resize ratio."""
    size = chosen["input_size"]
    if args.weights:
        model = load(args.weights)
        if _trained_classes(args.weights, model) != names:
            model = replace_head(model, len(names), seed=args.seed)
        if args.bn_momentum is not None and args.bn_momentum != model.graph.options.bn_momentum:
            model = with_options(model, bn_momentum=args.bn_momentum).train()
        if model.preprocess is not None:  # the weights' normalisation (and resize ratio)
            normalise = model.preprocess
            if ratio is None:
                ratio = normalise["resize"] / normalise["crop"]
    else:
        model = build_model(chosen["spec"], depth_multiplier=chosen["depth_multiplier"], input_size=size,
                            num_classes=len(names), global_pool=True, bn_momentum=args.bn_momentum,
                            seed=args.seed)
    ratio = LARGE_AUGMENTATION["resize_ratio"] if ratio is None else ratio
    model.preprocess = {**normalise, "resize": round(size * ratio), "crop": size}
    model.class_names = names
    if args.freeze_backbone:
        model.freeze(trainable=("Logits",))
    return model.train()  # converted files load in eval mode


def _cached_endpoint(args, model) -> str:
    """The endpoint whose features ``--cache-features`` caches."""
    if not args.freeze_backbone:
        raise ValueError("--cache-features needs --freeze-backbone (the cached backbone must not change)")
    return pool_endpoint(model)


def _train(args, config: TrainConfig, chosen: dict, datasets, folder: RunFolder, comm: Communicator) -> int:
    """Build the model, train it into ``folder`` (locked and claimed by process 0), export samples."""
    size, out, kind = chosen["input_size"], folder.path, data_kind(args.data)
    train_set, val_set, normalise = datasets
    names = sorted(train_set.class_indices, key=train_set.class_indices.get)
    augment = _augmentation(args, kind, size)
    # A --weights file's own resize ratio is kept for inputs that are not tiny, unless given.
    keep_file_ratio = args.weights and args.resize_ratio is None and size >= TINY and kind != "digits"
    model = comm.agree(lambda: _model(args, chosen, names, normalise,
                                      None if keep_file_ratio else augment["resize_ratio"]))
    preprocess = model.preprocess
    train_tf = TrainTransform(preprocess, scale=(augment["crop_scale"], 1.0),
                              ratio=ASPECTS.get(kind, (3 / 4, 4 / 3)), flip=augment["flip"])
    train_loader = Loader(train_set, train_tf, args.batch_size, shuffle=True, seed=args.seed,
                          workers=args.workers)
    val_loader = Loader(val_set, EvalTransform(preprocess), args.batch_size, workers=args.workers)
    forward = None
    if args.cache_features:
        endpoint = comm.agree(lambda: _cached_endpoint(args, model))
        plain_train = Loader(train_set, EvalTransform(preprocess), args.batch_size, workers=args.workers)
        train_loader = ArrayLoader(*cache_features(model, plain_train, endpoint), args.batch_size,
                                   shuffle=True, seed=args.seed)
        val_loader = ArrayLoader(*cache_features(model, val_loader, endpoint), args.batch_size)
        forward = lambda features: model.forward_from(endpoint, features)  # noqa: E731

    trainer = Trainer(model, train_loader, val_loader, folder, config, forward=forward,
                      progress=not args.quiet, distributed=args.distributed, sync_bn=args.sync_bn)
    if args.resume:
        trainer.resume()
    if not comm.root:
        trainer.fit()
        return 0
    processes = f" in {comm.size} processes" + (", synchronised batch norm" if trainer.sync_bn else "") \
        if comm.size > 1 else ""
    print(f"training {model!r} on {len(train_set)} images, validating on {len(val_set)}; "
          f"{config.optimizer} lr {config.lr:g}, batch {args.batch_size}, batch-norm momentum "
          f"{model.graph.options.bn_momentum:g}{processes}")
    trainer.fit()
    print(f"best validation accuracy {trainer.best_top1:.4f}; model file {out / 'best.safetensors'}")
    if args.export_samples:
        samples = _export_samples(val_set, out, args.export_samples)
        print(f"{len(samples)} held-out images in {out / SAMPLES} (true class last in the name); try:\n"
              f"  npmobilenet predict --weights {out / 'best.safetensors'} {out / SAMPLES}")
    return 0

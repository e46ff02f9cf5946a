"""The trainer: epochs, validation, metrics, atomic checkpoints, exact resume, transfer learning.

A checkpoint is one model file (see :mod:`npmobilenet.io.model_file`) that also carries the
training state: optimizer buffers and step, epoch, best accuracy, the run's settings. So
``last.safetensors`` resumes training and ``best.safetensors`` is ready for ``predict``. The
data order of epoch ``e`` depends only on ``(seed, e)``, a sample's augmentation and dropout
masks only on ``(seed, e, sample index)`` (see :class:`npmobilenet.data.Loader` and
:meth:`npmobilenet.model.Model.keyed_dropout`), so a resumed run sees the batches an
uninterrupted one would, with no generator state saved.

Data-parallel training (``Trainer(distributed=True)`` under ``mpiexec -n N``; see
:mod:`npmobilenet.distributed`): each process takes its share of every batch, the gradients
are summed over the processes, so every process takes the step one process would take on the
whole batch; with ``sync_bn`` batch norm uses the whole batch's statistics too, and the run
equals one process's to rounding. Process 0 alone holds the folder's lock and writes;
nothing saved depends on the number of processes, so a run resumes with any.
The output folder is a :class:`npmobilenet.runs.RunFolder`: one writer at a time, never
clobbered by accident, resumed only with the settings its state was saved under.

:class:`TrainConfig` checks every hyper-parameter against ``RANGES`` (shared with the command
line's flags) through :mod:`npmobilenet.validate`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import functional as F
from . import validate
from .autograd import no_grad
from .data import Epochs, class_index
from .distributed import Communicator, GradientBuckets, SyncBatchNorm, world
from .io.model_file import load, load_training_state, save
from .model import Model, build_model
from .ops.norm import synchronised
from .optim import (SGD, Adam, CosineDecay, ExponentialDecay, ExponentialMovingAverage, RMSProp, StepDecay,
                    Warmup, clip_grad_norm, decay_groups)
from .runs import BEST, LAST, RunFolder, compare_settings, run_settings


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


# The range of each numeric hyper-parameter, as keyword arguments of validate.integer (epochs,
# seed) or validate.number (the rest); the command line's flags use the same ranges.
RANGES = {
    "epochs": {"low": 1},
    "lr": {"low": 0.0, "low_open": True},
    "momentum": {"low": 0.0, "high": 1.0, "high_open": True},
    "rho": {"low": 0.0, "high": 1.0, "high_open": True},
    "eps": {"low": 0.0, "low_open": True},
    "weight_decay": {"low": 0.0},
    "warmup_epochs": {"low": 0.0},  # and at most epochs
    "label_smoothing": {"low": 0.0, "high": 1.0, "high_open": True},
    "clip_norm": {"low": 0.0, "low_open": True},
    "ema_decay": {"low": 0.0, "high": 1.0, "low_open": True, "high_open": True},
    "seed": {"low": 0},
}
INTEGERS = ("epochs", "seed")
OPTIONAL = ("clip_norm", "ema_decay")  # None: off

# Each optimizer's default learning rate (batch 32-64): SGD with Nesterov momentum as the CLI's
# quickstart uses it; RMSProp as the MobileNet paper and Keras's CIFAR recipe (0.045); Adam as
# torch and Keras (0.001; 0.05 makes Adam diverge).
DEFAULT_LR = {"sgd": 0.05, "rmsprop": 0.045, "adam": 0.001}
# Options that only one optimizer has, and their defaults there (TF's RMSProp: decay 0.9, eps 1.0;
# Adam's eps 1e-8).
OPTIMIZER_OPTIONS = {"rho": {"rmsprop": 0.9}, "eps": {"rmsprop": 1.0, "adam": 1e-8},
                     "rmsprop_start": {"rmsprop": "tf"}}
# Where RMSProp's mean-square accumulator starts: TF1 (the paper's runs) at 1, Keras at 0.
RMSPROP_STARTS = {"tf": 1.0, "keras": 0.0}


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (saved in ``config.json`` beside the checkpoints).

    Each value is checked on construction (``ValueError`` naming it): see ``RANGES``;
    ``warmup_epochs`` is also at most ``epochs``; ``clip_norm`` and ``ema_decay`` may be None (off).
    ``lr`` None is the optimizer's default (``DEFAULT_LR``). ``rho`` and ``rmsprop_start`` (RMSProp)
    and ``eps`` (RMSProp, Adam) None are the optimizer's defaults; given for an optimizer without
    them they are refused rather than ignored.
    """

    epochs: int = 15
    optimizer: str = "sgd"  # sgd | rmsprop | adam
    lr: float | None = None
    momentum: float = 0.9
    rho: float | None = None  # RMSProp's decay of the mean square
    eps: float | None = None
    rmsprop_start: str | None = None  # tf (accumulator starts at 1) | keras (at 0)
    weight_decay: float = 4e-5
    schedule: str = "cosine"  # cosine | exponential (x0.94 every 2 epochs) | step | constant
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    clip_norm: float | None = None
    ema_decay: float | None = None  # validate and keep the best of averaged weights (e.g. 0.999)
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        for name, defaults in OPTIMIZER_OPTIONS.items():
            if getattr(self, name) is None:
                setattr(self, name, defaults.get(self.optimizer))
            elif self.optimizer not in defaults:
                raise ValueError(f"{name}: applies to {' and '.join(defaults)}, not {self.optimizer}")
        if self.rmsprop_start is not None and self.rmsprop_start not in RMSPROP_STARTS:
            raise ValueError(f"rmsprop_start: expected one of {sorted(RMSPROP_STARTS)}, got "
                             f"{self.rmsprop_start!r}")
        for name, bounds in RANGES.items():
            value = getattr(self, name)
            if value is None and (name in OPTIONAL or name in OPTIMIZER_OPTIONS):
                continue
            check = validate.integer if name in INTEGERS else validate.number
            setattr(self, name, check(name, value, **bounds))
        validate.number("warmup_epochs", self.warmup_epochs, 0.0, self.epochs)


OPTIMIZERS = {
    "sgd": lambda groups, c: SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.momentum > 0),
    "rmsprop": lambda groups, c: RMSProp(groups, lr=c.lr, momentum=c.momentum, decay=c.rho, eps=c.eps,
                                         initial_mean_square=RMSPROP_STARTS[c.rmsprop_start]),
    "adam": lambda groups, c: Adam(groups, lr=c.lr, eps=c.eps),
}
SCHEDULES = {
    "cosine": lambda c, steps: CosineDecay(c.lr, c.epochs * steps),
    "exponential": lambda c, steps: ExponentialDecay(c.lr, decay_steps=2 * steps, rate=0.94),
    "step": lambda c, steps: StepDecay(c.lr, step_size=max(1, c.epochs // 3) * steps),
    "constant": lambda c, steps: (lambda step: c.lr),
}


def make_optimizer(model: Model, config: TrainConfig):
    """The configured optimizer over the trainable parameters (depthwise and BN undecayed)."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (everything is frozen)")
    return OPTIMIZERS[config.optimizer](decay_groups(trainable, config.weight_decay), config)


def make_schedule(config: TrainConfig, steps_per_epoch: int):
    """The configured learning rate per step, with the linear warm-up if any."""
    schedule = SCHEDULES[config.schedule](config, steps_per_epoch)
    warmup = int(config.warmup_epochs * steps_per_epoch)
    return Warmup(schedule, warmup) if warmup else schedule


# -- transfer learning -----------------------------------------------------------------------

def with_options(model: Model, seed: int | None = None, reinitialise: tuple[str, ...] = (),
                 **options) -> Model:
    """A copy of ``model`` built with other build options (``bn_momentum``, ``dropout``,
    ``num_classes``...; see :func:`npmobilenet.build_model`), holding its weights, moving
    statistics, frozen layers, ``requires_grad`` flags, preprocessing and (for the same number
    of classes) class names.

    The nodes named in ``reinitialise``, and parameters the new graph shapes differently, keep
    a fresh initialisation (seeded by ``seed``), trainable.
    """
    spec = model.spec if model.spec is not None else model.graph.name
    new = build_model(spec, dtype=model.dtype, seed=seed, **{**model.graph.options.to_dict(), **options})
    shapes = {**new.graph.parameter_shapes(), **new.graph.buffer_shapes()}
    kept = {name: value for name, value in model.state_dict().items()
            if shapes.get(name) == value.shape and name.split("/", 1)[0] not in reinitialise}
    new.load_state_dict(kept, strict=False)
    old = dict(model.named_parameters())
    for name, param in new.named_parameters():
        param.requires_grad = old[name].requires_grad if name in kept else True
    nodes = {node.name for node in new.graph.nodes}
    new.frozen = {name for name in model.frozen if name in nodes and name not in reinitialise}
    same_classes = new.graph.options.num_classes == model.graph.options.num_classes
    new.preprocess, new.class_names = model.preprocess, model.class_names if same_classes else None
    new.train(model.training)
    return new


def replace_head(model: Model, num_classes: int, seed: int | None = None) -> Model:
    """A copy of ``model`` with a freshly initialised, trainable ``num_classes`` head; the rest
    (weights, moving statistics, and which layers are frozen or have ``requires_grad`` off)
    carried over, as after ``model.fc = nn.Linear(...)`` in torch. The class names are dropped:
    set ``class_names`` for the new classes."""
    new = with_options(model, seed=seed, reinitialise=("Logits",), num_classes=num_classes)
    new.class_names = None
    return new


def recalibrate_batch_norm(model: Model, loader, max_batches: int | None = None) -> Model:
    """Recompute the batch-norm moving statistics of ``model`` from data, as torch's
    ``torch.optim.swa_utils.update_bn``: each statistic becomes the equally weighted average of
    its per-batch values over ``loader`` (batches ``x`` or ``(x, y)``; at most ``max_batches``).
    A :class:`~npmobilenet.data.Loader` gives its epoch 0, so a training loader's next pass is
    not moved on.

    Use it when eval mode scores far below train mode: after training with a small momentum
    (TF-slim's 0.0003), after averaging weights, or after loading statistics from other data.
    Frozen layers (:meth:`Model.freeze`) keep theirs. Returns ``model``, in the mode it was in.
    """
    if max_batches is not None:
        validate.integer("recalibrate_batch_norm: max_batches", max_batches, 1)
    probe = with_options(model, bn_momentum=1.0)  # its moving statistics are the last batch's
    probe.train()
    sums = {name: np.zeros_like(value, dtype=np.float64) for name, value in model.named_buffers()}
    count = 0
    with no_grad():
        for batch in loader.epoch(0) if isinstance(loader, Epochs) else loader:
            if max_batches is not None and count >= max_batches:
                break
            probe(batch[0] if isinstance(batch, (tuple, list)) else batch)
            for name, value in probe.named_buffers():
                sums[name] += value
            count += 1
    if count == 0:
        raise ValueError("recalibrate_batch_norm: the loader gave no batches")
    frozen = tuple(f"{node}/" for node in model.frozen)
    model.load_state_dict({name: total / count for name, total in sums.items()
                           if not name.startswith(frozen)}, strict=False)
    return model


def pool_endpoint(model: Model) -> str:
    """The pooled-features node (the head's input), whose output can be cached."""
    pools = [node.name for node in model.graph.nodes if node.op == "pool"]
    if not pools:
        raise ValueError(f"{model.graph.name}: the graph has no pool node (headless model?)")
    return pools[-1]


def cache_features(model: Model, loader, endpoint: str) -> tuple[np.ndarray, np.ndarray]:
    """Run the (frozen) backbone once over ``loader``: features (N, C) and labels (N,)."""
    training = model.training
    model.eval()
    features, labels = [], []
    with no_grad():
        for x, y in loader.epoch(0):
            model(x, end_points=(endpoint,))
            features.append(model.end_points[endpoint].data)
            labels.append(y)
    model.train(training)
    return np.concatenate(features), np.concatenate(labels)


class ArrayLoader(Epochs):
    """Batches of cached (features, labels), shuffled by ``(seed, epoch)`` like ``Loader``; each
    pass is the next epoch."""

    def __init__(self, features, labels, batch_size: int, shuffle: bool = False, seed: int = 0):
        self.features, self.labels, self.batch_size = features, labels, batch_size
        self.shuffle, self.seed, self.skipped = shuffle, seed, 0

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def chunks(self, epoch: int) -> list[np.ndarray]:
        count = len(self.labels)
        order = np.random.default_rng([self.seed, epoch]).permutation(count) if self.shuffle else np.arange(count)
        return [order[i:i + self.batch_size] for i in range(0, count, self.batch_size)]

    def _loaded(self, parts, epoch):
        for chosen in parts:
            yield (self.features[chosen], self.labels[chosen], chosen) if len(chosen) else None


# -- evaluation ------------------------------------------------------------------------------

def evaluate(model: Model, loader, num_classes: int, forward=None, comm: Communicator | None = None) -> dict:
    """Loss, top-1, top-5, per-class accuracy and the confusion matrix (rows: true class).

    Top-5 is None for five classes or fewer, where every label is in the top five; a class
    without images has per-class accuracy None. With ``comm`` each process evaluates its share
    of every batch of ``loader`` (an :class:`~npmobilenet.data.Epochs`) and all get the totals."""
    forward = forward or (lambda x: model(x, end_points=()))  # the logits alone: less memory
    comm = comm or Communicator()
    training = model.training
    model.eval()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    loss_sum, top5_hits, count = 0.0, 0, 0
    with no_grad():
        for _, x, y in loader.batches(0, comm.rank, comm.size):
            if x is None:
                continue
            logits = forward(x)
            loss_sum += F.cross_entropy(logits, y).item() * len(y)
            ranked = np.argsort(-logits.data, axis=1, kind="stable")
            top5_hits += int((ranked[:, :5] == y[:, None]).any(axis=1).sum())
            np.add.at(confusion, (y, ranked[:, 0]), 1)
            count += len(y)
    model.train(training)
    loss_sum = float(comm.sum(np.array([loss_sum]))[0])
    totals = comm.sum(np.concatenate([[top5_hits, count], confusion.ravel()]))
    top5_hits, count, confusion = int(totals[0]), int(totals[1]), totals[2:].reshape(confusion.shape)
    if count == 0:
        raise ValueError("evaluate: the data gave no readable images")
    totals = confusion.sum(axis=1)
    per_class = [float(hits / total) if total else None for hits, total in zip(np.diag(confusion), totals)]
    return {"loss": loss_sum / count, "top1": float(np.trace(confusion) / count),
            "top5": top5_hits / count if num_classes > 5 else None, "per_class": per_class,
            "confusion": confusion.tolist(), "images": count}


# -- the trainer -----------------------------------------------------------------------------

@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)


class Trainer:
    """Trains ``model`` on ``train_loader``, validating on ``val_loader`` after every epoch.

    Writes into ``out_dir`` (a path or a :class:`~npmobilenet.runs.RunFolder`), holding its lock
    while it writes: ``last.safetensors`` (resumable), ``best.safetensors`` (best validation
    top-1), ``metrics.csv`` / ``metrics.json``, ``config.json``, and, when ``model.class_names``
    is set, ``labels.txt`` and ``class_indices.json``. A folder already holding a run is refused
    unless the trainer resumes it or ``overwrite`` is set. ``forward`` replaces ``model(x)``, e.g.
    to train the head on cached features. With ``config.ema_decay`` an exponential moving average
    of the trainable weights is kept; validation and ``best.safetensors`` use the averaged
    weights, ``last.safetensors`` holds both.

    ``distributed`` trains data-parallel over the processes of ``mpiexec`` (one process
    without it; see the module docstring), with ``sync_bn`` batch norm normalising with the
    whole batch's statistics; without it each process normalises its share, as torch's
    DistributedDataParallel does, and the moving statistics are averaged after each epoch.
    Only process 0 writes and reports; an error met by every process is raised on every one.
    The loaders are :class:`~npmobilenet.data.Epochs`: every process needs at least one image
    of every batch.
    """

    def __init__(self, model: Model, train_loader, val_loader, out_dir, config: TrainConfig,
                 forward=None, progress: bool = True, report: bool = True, overwrite: bool = False,
                 distributed: bool = False, sync_bn: bool = False):
        if sync_bn and not distributed:
            raise ValueError("sync_bn: synchronised batch norm needs distributed training")
        self.comm = world() if distributed else Communicator()
        self.sync_bn = SyncBatchNorm(self.comm) if sync_bn and self.comm.size > 1 else None
        self.model, self.train_loader, self.val_loader = model, train_loader, val_loader
        self.run = out_dir if isinstance(out_dir, RunFolder) else RunFolder(out_dir)
        self.out_dir = self.run.path
        # The logits alone: backward then frees each activation after its last gradient.
        self.config, self.forward = config, forward or (lambda x: model(x, end_points=()))
        self.progress, self.report = progress and self.comm.root, report and self.comm.root
        self.overwrite, self.resumed = overwrite, False
        self.num_classes = model.graph.options.num_classes
        if model.class_names is not None and len(class_index(model.class_names, "class_names")) \
                != self.num_classes:
            raise ValueError(f"class_names: {len(model.class_names)} names for the model's "
                             f"{self.num_classes} classes")
        self.optimizer = make_optimizer(model, config)
        self.schedule = make_schedule(config, len(train_loader))
        self.start_epoch, self.best_top1, self.best_epoch, self.history = 0, -1.0, None, History()
        self.ema = None
        if config.ema_decay is not None:
            self.ema = ExponentialMovingAverage(self._trainable(), config.ema_decay)
        self.gradients = GradientBuckets([p for _, p in self._trainable()], self.comm)
        self.comm.agree(self._check_shares)

    def _check_shares(self) -> None:
        smallest = min(map(len, self.train_loader.chunks(0)), default=self.comm.size)
        if smallest < self.comm.size:
            raise ValueError(f"distributed: the smallest training batch holds {smallest} images for "
                             f"{self.comm.size} processes, and every process needs one; use fewer "
                             f"processes or another batch size")

    def _trainable(self):
        return [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]

    def settings(self) -> dict:
        """This run's settings (see :func:`npmobilenet.runs.run_settings`), stored in checkpoints."""
        return run_settings(self.model, asdict(self.config))

    @contextmanager
    def averaged_weights(self):
        """Within the block the model holds the moving-average weights (no-op without EMA)."""
        if self.ema is None:
            yield
            return
        raw = {name: p.data.copy() for name, p in self._trainable()}
        self.ema.copy_to(self.model)
        try:
            yield
        finally:
            self.model.load_state_dict(raw, strict=False)

    # checkpoints
    def _training_state(self, epoch: int) -> tuple[dict, dict]:
        optimizer = self.optimizer.state_dict()
        info = {"epoch": epoch, "best_top1": self.best_top1, "best_epoch": self.best_epoch,
                "steps": optimizer["steps"], "lr": optimizer["lr"], "config": asdict(self.config),
                "settings": self.settings(), "history": self.history.epochs}
        arrays = {f"optimizer/{k}": v for k, v in optimizer["buffers"].items()}
        if self.ema is not None:
            arrays.update({f"ema/{k}": v for k, v in self.ema.shadow.items()})
        return arrays, info

    def save_checkpoint(self, name: str, epoch: int, averaged: bool = False) -> Path:
        """Write ``out_dir/name`` atomically: the model (its averaged weights when ``averaged``)
        and the training state (process 0 of a distributed run)."""
        path = self.out_dir / name
        state = self._training_state(epoch)
        with self.run.lock():
            if averaged:
                with self.averaged_weights():
                    save(self.model, path, training_state=state)
            else:
                save(self.model, path, training_state=state)
        return path

    def resume(self, path=None) -> None:
        """Continue from a checkpoint (default ``last.safetensors``): weights, moving statistics,
        optimizer, schedule position and history. Every process of a distributed run reads it,
        however many processes wrote it.

        Refuses a checkpoint saved under other fixed settings (architecture, classes, optimizer,
        ...; see :mod:`npmobilenet.runs`), listing them; changed hyper-parameters, such as more
        epochs, are reported. Finishes what a kill during the checkpoint's epoch left undone
        (``best.safetensors``, the metrics). A checkpoint of an older version keeps the state of
        its dropout generator, no longer needed: masks are keyed by sample.
        """
        path = Path(path) if path is not None else self.out_dir / LAST
        self.comm.agree(lambda: self._resume(path))

    def _resume(self, path: Path) -> None:
        with self.run.lock() if self.comm.root else nullcontext():
            arrays, info = load_training_state(path)
            saved = load(path)
            self._check_settings(path, info, saved)
            self.model.load_state_dict(saved.state_dict())
            buffers = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
            self.optimizer.load_state_dict({"steps": info["steps"], "lr": info["lr"], "buffers": buffers})
            if self.ema is not None:
                shadow = {k[len("ema/"):]: v for k, v in arrays.items() if k.startswith("ema/")}
                if set(shadow) != set(self.ema.shadow):
                    raise ValueError(f"{path}: the checkpoint's moving averages do not match this run's "
                                     f"trainable parameters (was it trained with ema_decay?)")
                self.ema.shadow = {k: np.array(v, dtype=self.model.dtype) for k, v in shadow.items()}
            self.start_epoch, self.best_top1 = info["epoch"] + 1, info["best_top1"]
            self.best_epoch = info.get("best_epoch")
            self.history.epochs = list(info["history"])
            self.resumed = True
            if path == self.out_dir / LAST and self.comm.root:
                self._finish_saved_epoch(info["epoch"])

    def _check_settings(self, path: Path, info: dict, saved: Model) -> None:
        """Refuse to resume under other fixed settings; report changed hyper-parameters."""
        stored = info.get("settings")
        if stored is None:  # a checkpoint from before settings were stored: what its files tell
            stored = {key: value for key, value in run_settings(saved, info["config"]).items()
                      if key not in ("class_names", "frozen")}
        if self.model.class_names is None:
            self.model.class_names = stored.get("class_names")
        fixed, changed = compare_settings(stored, self.settings())
        if fixed:
            raise ValueError(f"{path}: cannot resume with settings that differ from the run's: "
                             f"{'; '.join(fixed)}; resume with the run's settings, or start a new "
                             f"run (another --out, or --overwrite)")
        done = info["epoch"] + 1
        if self.config.epochs < done:
            raise ValueError(f"{path}: the run has already trained {done} epochs; resuming it "
                             f"needs epochs >= {done}, got {self.config.epochs}")
        if changed and self.report:
            print(f"resuming after epoch {done} with changed settings: {'; '.join(changed)}", flush=True)

    def _finish_saved_epoch(self, epoch: int) -> None:
        """A kill after ``last`` was written but before ``best`` or the metrics were: write them."""
        if self.best_epoch == epoch and _saved_epoch(self.out_dir / BEST) != epoch:
            self.save_checkpoint(BEST, epoch, averaged=True)
        if self.history.epochs:
            self._write_metrics()

    # loop
    def train_epoch(self, epoch: int) -> dict:
        """One epoch; every process's metrics are those of the whole batches."""
        from tqdm import tqdm

        model, opt, comm = self.model, self.optimizer, self.comm
        model.train()
        seen = correct = 0
        loss_sum, start = 0.0, time.perf_counter()
        bar = tqdm(self.train_loader.batches(epoch, comm.rank, comm.size), total=len(self.train_loader),
                   disable=not self.progress, desc=f"epoch {epoch + 1}/{self.config.epochs}", leave=False,
                   dynamic_ncols=True)
        for indices, x, y in bar:
            total, empty = comm.sum(np.array([len(y), len(y) == 0], np.int64))
            if total == 0:  # no readable image in the whole batch
                continue
            if empty:
                comm.fail(ValueError(f"epoch {epoch + 1}, step {opt.steps + 1}: a process's share of "
                                     f"the batch holds no readable image; use fewer processes"))
            opt.lr = self.schedule(opt.steps)
            opt.zero_grad()
            with model.keyed_dropout(self.config.seed, epoch, indices), synchronised(self.sync_bn):
                logits = self.forward(x)
            loss = F.cross_entropy(logits, y, self.config.label_smoothing)
            # This process's loss and hits, then the whole batch's, known to every process.
            batch_loss, hits = comm.sum(np.array([loss.item() * len(y), (logits.data.argmax(axis=1) == y).sum()]))
            if not math.isfinite(batch_loss):
                comm.fail(TrainingDiverged(self._divergence(
                    f"the loss became {batch_loss / total} at epoch {epoch + 1}, step {opt.steps + 1}", epoch)))
            if comm.size > 1:  # this share's part of the whole batch's mean: the sum is the mean
                loss = loss * (len(y) / total)
            loss.backward()
            self.gradients.sum()
            if self.config.clip_norm is not None:
                clip_grad_norm(model.parameters(), self.config.clip_norm)
            opt.step()
            if self.ema is not None:
                self.ema.update(self._trainable(), num_updates=opt.steps)
            seen += int(total)
            correct += int(hits)
            loss_sum += batch_loss
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen / (time.perf_counter() - start):.0f}")
        bar.close()
        if self.sync_bn is None and comm.size > 1:
            self._average_moving_statistics()
        return {"train_loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1),
                "images_per_second": seen / (time.perf_counter() - start), "lr": opt.lr}

    def _average_moving_statistics(self) -> None:
        """Without synchronised batch norm each process's moving statistics follow its own
        shares; their average is what every process validates and saves."""
        for _, value in self.model.named_buffers():
            self.comm.sum(value)
            value /= value.dtype.type(self.comm.size)

    def _divergence(self, what: str, epoch: int) -> str:
        """The message of TrainingDiverged during ``epoch`` (0-based): what happened, what is
        kept, what to try."""
        what = f"training diverged: {what} (learning rate {self.optimizer.lr:.3g}); stopped"
        if epoch == 0:
            return f"{what} before the first checkpoint; try a lower learning rate (--lr)"
        return (f"{what}, the last good checkpoint is kept: {self.out_dir / LAST} (epoch {epoch}); "
                f"continue it with --resume and a lower --lr")

    def fit(self, stop_after: int | None = None) -> History:
        """Train up to ``config.epochs``, or only up to epoch ``stop_after`` (1-based), as an
        interrupted run would; ``resume`` then continues it.

        Each epoch writes ``last`` before ``best``, so a kill in between loses nothing: resuming
        from ``last`` writes the missing ``best`` (see :meth:`resume`). A loss or validation
        loss that is not finite stops training with :class:`TrainingDiverged` before anything
        is saved (the floating-point overflow on the way there is not warned about separately).
        """
        last = self.config.epochs if stop_after is None else min(stop_after, self.config.epochs)
        with ExitStack() as held, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            self.comm.agree(lambda: self._claim(held))
            for epoch in range(self.start_epoch, last):
                row = {"epoch": epoch + 1, **self.train_epoch(epoch)}
                with self.averaged_weights():
                    val = evaluate(self.model, self.val_loader, self.num_classes, self.forward, self.comm)
                if not math.isfinite(val["loss"]):
                    self.comm.fail(TrainingDiverged(self._divergence(
                        f"the validation loss became {val['loss']} after epoch {epoch + 1}", epoch)))
                row.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"],
                           skipped_images=int(self.comm.sum(np.array([self.train_loader.skipped
                                                                       + self.val_loader.skipped]))[0]))
                self.history.epochs.append(row)
                improved = val["top1"] > self.best_top1
                if improved:
                    self.best_top1, self.best_epoch = val["top1"], epoch
                self.comm.agree(lambda: self._save_epoch(epoch, improved, row) if self.comm.root else None)
        return self.history

    def _claim(self, held: ExitStack) -> None:
        """Take the folder's lock for the run (process 0) and claim it."""
        if self.comm.root:
            held.enter_context(self.run.lock())
            self.run.claim(resume=self.resumed, overwrite=self.overwrite)
            self._write_class_names()

    def _save_epoch(self, epoch: int, improved: bool, row: dict) -> None:
        """The checkpoints, metrics and report line of ``epoch``."""
        self.save_checkpoint(LAST, epoch)
        if improved:
            self.save_checkpoint(BEST, epoch, averaged=True)
        self._write_metrics()
        if self.report:
            print(f"epoch {epoch + 1}/{self.config.epochs}: loss {row['train_loss']:.4f}, "
                  f"train acc {row['train_top1']:.4f}, val loss {row['val_loss']:.4f}, "
                  f"val acc {row['val_top1']:.4f}, {row['images_per_second']:.0f} images/s", flush=True)

    def _write_class_names(self) -> None:
        """``labels.txt`` (one name a line, for ``predict --labels``) and ``class_indices.json``."""
        names = self.model.class_names
        if names is not None:
            self.run.write_text("labels.txt", "\n".join(names) + "\n")
            self.run.write_text("class_indices.json", json.dumps(class_index(names, "class_names"), indent=1))

    def _write_metrics(self) -> None:
        rows = self.history.epochs
        self.run.write_text("metrics.json", json.dumps(rows, indent=1))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        self.run.write_text("metrics.csv", buffer.getvalue())
        self.run.write_text("config.json", json.dumps(asdict(self.config), indent=1))
        plot_curves(rows, self.out_dir / "curves.png")


def _saved_epoch(path: Path) -> int | None:
    """The epoch of the checkpoint at ``path``, or None if there is none readable."""
    try:
        return load_training_state(path)[1]["epoch"]
    except (FileNotFoundError, ValueError):
        return None


def plot_curves(rows: list[dict], path: Path) -> bool:
    """Loss and accuracy per epoch as a PNG, when matplotlib is installed; returns whether drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = [r["epoch"] for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [r["train_loss"] for r in rows], label="train")
    left.plot(epochs, [r["val_loss"] for r in rows], label="validation")
    left.set(xlabel="epoch", ylabel="loss")
    right.plot(epochs, [r["train_top1"] for r in rows], label="train")
    right.plot(epochs, [r["val_top1"] for r in rows], label="validation")
    right.set(xlabel="epoch", ylabel="top-1 accuracy")
    left.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True

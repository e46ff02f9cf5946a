"""The trainer: epochs, validation, metrics, atomic checkpoints, exact resume, transfer learning.

A checkpoint is one model file (see :mod:`npmobilenet.io.model_file`) that also carries the
training state: optimizer buffers and step, epoch, best accuracy, the dropout generator. So
``last.safetensors`` resumes training and ``best.safetensors`` is ready for ``predict``. The data
order of epoch ``e`` depends only on ``(seed, e)`` (see :class:`npmobilenet.data.Loader`), so a
resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import functional as F
from .autograd import no_grad
from .io.model_file import load_training_state, save
from .model import Model, build_model
from .optim import (SGD, Adam, CosineDecay, ExponentialDecay, ExponentialMovingAverage, RMSProp, StepDecay,
                    Warmup, clip_grad_norm, decay_groups)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (saved in ``config.json`` beside the checkpoints)."""

    epochs: int = 15
    optimizer: str = "sgd"  # sgd | rmsprop | adam
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    schedule: str = "cosine"  # cosine | exponential (x0.94 every 2 epochs) | step | constant
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    clip_norm: float | None = None
    ema_decay: float | None = None  # validate and keep the best of averaged weights (e.g. 0.999)
    seed: int = 0

    def __post_init__(self):
        if self.epochs <= 0:
            raise ValueError(f"epochs: expected a positive integer, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected a positive number, got {self.lr}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected a number in (0, 1), got {self.ema_decay}")


OPTIMIZERS = {
    "sgd": lambda groups, c: SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.momentum > 0),
    "rmsprop": lambda groups, c: RMSProp(groups, lr=c.lr, momentum=c.momentum),
    "adam": lambda groups, c: Adam(groups, lr=c.lr),
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
    schedule = SCHEDULES[config.schedule](config, steps_per_epoch)
    warmup = int(config.warmup_epochs * steps_per_epoch)
    return Warmup(schedule, warmup) if warmup else schedule


# -- transfer learning -----------------------------------------------------------------------

def replace_head(model: Model, num_classes: int, seed: int | None = None) -> Model:
    """A copy of ``model`` with a freshly initialised ``num_classes`` head; the rest (weights and
    moving statistics) carried over."""
    spec = model.spec if model.spec is not None else model.graph.name
    options = {**model.graph.options.to_dict(), "num_classes": num_classes}
    new = build_model(spec, dtype=model.dtype, seed=seed, **options)
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("Logits/")}
    new.load_state_dict(backbone, strict=False)
    new.preprocess = model.preprocess
    return new


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
            model(x)
            features.append(model.end_points[endpoint].data)
            labels.append(y)
    model.train(training)
    return np.concatenate(features), np.concatenate(labels)


class ArrayLoader:
    """Batches of cached (features, labels), shuffled by ``(seed, epoch)`` like ``Loader``."""

    def __init__(self, features, labels, batch_size: int, shuffle: bool = False, seed: int = 0):
        self.features, self.labels, self.batch_size = features, labels, batch_size
        self.shuffle, self.seed, self.skipped = shuffle, seed, 0

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def epoch(self, epoch: int = 0):
        count = len(self.labels)
        order = np.random.default_rng([self.seed, epoch]).permutation(count) if self.shuffle else np.arange(count)
        for i in range(0, count, self.batch_size):
            chosen = order[i:i + self.batch_size]
            yield self.features[chosen], self.labels[chosen]


# -- evaluation ------------------------------------------------------------------------------

def evaluate(model: Model, loader, num_classes: int, forward=None) -> dict:
    """Loss, top-1, top-5, per-class accuracy and the confusion matrix (rows: true class)."""
    forward = forward or model
    training = model.training
    model.eval()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    loss_sum, top5_hits, count = 0.0, 0, 0
    with no_grad():
        for x, y in loader.epoch(0):
            logits = forward(x)
            loss_sum += F.cross_entropy(logits, y).item() * len(y)
            ranked = np.argsort(-logits.data, axis=1, kind="stable")
            top5_hits += int((ranked[:, :5] == y[:, None]).any(axis=1).sum())
            np.add.at(confusion, (y, ranked[:, 0]), 1)
            count += len(y)
    model.train(training)
    if count == 0:
        raise ValueError("evaluate: the data gave no readable images")
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return {"loss": loss_sum / count, "top1": float(np.trace(confusion) / count),
            "top5": top5_hits / count, "per_class": per_class.tolist(),
            "confusion": confusion.tolist(), "images": count}


# -- the trainer -----------------------------------------------------------------------------

@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Trainer:
    """Trains ``model`` on ``train_loader``, validating on ``val_loader`` after every epoch.

    Writes into ``out_dir``: ``last.safetensors`` (resumable), ``best.safetensors`` (best
    validation top-1), ``metrics.csv`` / ``metrics.json`` and ``config.json``. ``forward``
    replaces ``model(x)``, e.g. to train the head on cached features. With ``config.ema_decay``
    an exponential moving average of the trainable weights is kept; validation and
    ``best.safetensors`` use the averaged weights, ``last.safetensors`` holds both.
    """

    def __init__(self, model: Model, train_loader, val_loader, out_dir, config: TrainConfig,
                 forward=None, progress: bool = True, report: bool = True):
        self.model, self.train_loader, self.val_loader = model, train_loader, val_loader
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.config, self.forward, self.progress, self.report = config, forward or model, progress, report
        self.num_classes = model.graph.options.num_classes
        self.optimizer = make_optimizer(model, config)
        self.schedule = make_schedule(config, len(train_loader))
        self.start_epoch, self.best_top1, self.history = 0, -1.0, History()
        self.ema = None
        if config.ema_decay is not None:
            self.ema = ExponentialMovingAverage(self._trainable(), config.ema_decay)

    def _trainable(self):
        return [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]

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
        info = {"epoch": epoch, "best_top1": self.best_top1, "steps": optimizer["steps"],
                "lr": optimizer["lr"], "config": asdict(self.config),
                "dropout_rng": self.model.dropout_rng.bit_generator.state,
                "history": self.history.epochs}
        arrays = {f"optimizer/{k}": v for k, v in optimizer["buffers"].items()}
        if self.ema is not None:
            arrays.update({f"ema/{k}": v for k, v in self.ema.shadow.items()})
        return arrays, info

    def save_checkpoint(self, name: str, epoch: int, averaged: bool = False) -> Path:
        """Write ``out_dir/name`` atomically: the model (its averaged weights when ``averaged``)
        and the training state."""
        path = self.out_dir / name
        state = self._training_state(epoch)
        if averaged:
            with self.averaged_weights():
                save(self.model, path, training_state=state)
        else:
            save(self.model, path, training_state=state)
        return path

    def resume(self, path=None) -> None:
        """Continue from a checkpoint (default ``last.safetensors``): weights, moving statistics,
        optimizer, schedule position, dropout generator and history."""
        from .io.model_file import load

        path = Path(path) if path is not None else self.out_dir / "last.safetensors"
        arrays, info = load_training_state(path)
        self.model.load_state_dict(load(path).state_dict())
        buffers = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
        self.optimizer.load_state_dict({"steps": info["steps"], "lr": info["lr"], "buffers": buffers})
        if self.ema is not None:
            shadow = {k[len("ema/"):]: v for k, v in arrays.items() if k.startswith("ema/")}
            if set(shadow) != set(self.ema.shadow):
                raise ValueError(f"{path}: the checkpoint's moving averages do not match this run's "
                                 f"trainable parameters (was it trained with ema_decay?)")
            self.ema.shadow = {k: np.array(v, dtype=self.model.dtype) for k, v in shadow.items()}
        self.model.dropout_rng.bit_generator.state = info["dropout_rng"]
        self.start_epoch, self.best_top1 = info["epoch"] + 1, info["best_top1"]
        self.history.epochs = list(info["history"])

    # loop
    def train_epoch(self, epoch: int) -> dict:
        from tqdm import tqdm

        model, opt = self.model, self.optimizer
        model.train()
        seen = correct = 0
        loss_sum, start = 0.0, time.perf_counter()
        bar = tqdm(self.train_loader.epoch(epoch), total=len(self.train_loader), disable=not self.progress,
                   desc=f"epoch {epoch + 1}/{self.config.epochs}", leave=False, dynamic_ncols=True)
        for x, y in bar:
            opt.lr = self.schedule(opt.steps)
            opt.zero_grad()
            logits = self.forward(x)
            loss = F.cross_entropy(logits, y, self.config.label_smoothing)
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at epoch {epoch + 1}, step {opt.steps + 1}; "
                    f"stopped, the last good checkpoint in {self.out_dir} is kept. Try a lower --lr.")
            loss.backward()
            if self.config.clip_norm:
                clip_grad_norm(model.parameters(), self.config.clip_norm)
            opt.step()
            if self.ema is not None:
                self.ema.update(self._trainable(), num_updates=opt.steps)
            seen += len(y)
            correct += int((logits.data.argmax(axis=1) == y).sum())
            loss_sum += loss.item() * len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen / (time.perf_counter() - start):.0f}")
        bar.close()
        return {"train_loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1),
                "images_per_second": seen / (time.perf_counter() - start), "lr": opt.lr}

    def fit(self, stop_after: int | None = None) -> History:
        """Train up to ``config.epochs``, or only up to epoch ``stop_after`` (1-based), as an
        interrupted run would; ``resume`` then continues it."""
        last = self.config.epochs if stop_after is None else min(stop_after, self.config.epochs)
        for epoch in range(self.start_epoch, last):
            row = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            with self.averaged_weights():
                val = evaluate(self.model, self.val_loader, self.num_classes, self.forward)
            row.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"],
                       skipped_images=self.train_loader.skipped + self.val_loader.skipped)
            self.history.epochs.append(row)
            if val["top1"] > self.best_top1:
                self.best_top1 = val["top1"]
                self.save_checkpoint("best.safetensors", epoch, averaged=True)
            self.save_checkpoint("last.safetensors", epoch)
            self._write_metrics()
            if self.report:
                print(f"epoch {epoch + 1}/{self.config.epochs}: loss {row['train_loss']:.4f}, "
                      f"train acc {row['train_top1']:.4f}, val loss {row['val_loss']:.4f}, "
                      f"val acc {row['val_top1']:.4f}, {row['images_per_second']:.0f} images/s", flush=True)
        return self.history

    def _write_metrics(self) -> None:
        rows = self.history.epochs
        _atomic_write_text(self.out_dir / "metrics.json", json.dumps(rows, indent=1))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write_text(self.out_dir / "metrics.csv", buffer.getvalue())
        _atomic_write_text(self.out_dir / "config.json", json.dumps(asdict(self.config), indent=1))
        plot_curves(rows, self.out_dir / "curves.png")


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

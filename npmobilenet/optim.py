"""Optimizers over Tensors, learning-rate schedules, gradient clipping and weight averaging.

Interface as torch's: ``opt = SGD(model.parameters(), lr=0.1, momentum=0.9)``, then per step
``opt.zero_grad()``, ``loss.backward()``, ``opt.step()``. ``params`` may also be parameter
groups, lists of dicts ``{"params": [...], "weight_decay": ...}``, e.g. from
:func:`decay_groups`, which leaves depthwise and batch-norm parameters undecayed.

All updates happen in place in the parameters' dtype (float32 stays float32).

Every hyper-parameter is checked where it enters (:mod:`npmobilenet.validate`): a NaN learning
rate, ``betas`` of 1 or a negative weight decay raise ``ValueError`` at construction instead of
poisoning the weights at the first step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from . import validate
from .autograd import Tensor


def decay_groups(named_parameters, weight_decay: float,
                 skip: tuple[str, ...] = ("depthwise", "BatchNorm", "biases")) -> list[dict]:
    """Two groups: decayed parameters, and those whose name contains one of ``skip`` (no decay).

    MobileNet's paper puts little or no weight decay on depthwise filters; batch-norm scales and
    shifts and biases are conventionally not decayed either.
    """
    decayed, plain = [], []
    for name, param in named_parameters:
        (plain if any(part in name for part in skip) else decayed).append(param)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


class Optimizer:
    """Holds parameter groups, per-parameter state and the step count.

    Subclasses list their options with defaults in ``defaults``, the names of their
    per-parameter buffers in ``buffers``, and check their own options in ``_check``.
    """

    defaults: dict = {}
    buffers: tuple[str, ...] = ()

    def __init__(self, params, **hyper):
        name = type(self).__name__
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise ValueError(f"{name}: unknown options {sorted(unknown)}")
        params = list(params)
        if not params:
            raise ValueError(f"{name}: params is empty")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for index, group in enumerate(groups):
            group = {**self.defaults, **hyper, **group, "params": list(group["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise ValueError(f"{name}: group {index} holds a {type(p).__name__}, "
                                     f"expected Tensors (model.parameters())")
            group["lr"] = validate.number(f"{name}: lr", group["lr"], 0.0, low_open=True)
            group["weight_decay"] = validate.number(f"{name}: weight_decay", group["weight_decay"], 0.0)
            self._check(group)
            self.param_groups.append(group)
        self.state: dict[int, dict[str, np.ndarray]] = {}
        self.steps = 0

    def _check(self, group: dict) -> None:
        """Validate (and normalise, in place) the options of one parameter group."""

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        """Set every group's learning rate (what a schedule does each step); finite, >= 0."""
        value = validate.number(f"{type(self).__name__}: lr", value, 0.0)
        for group in self.param_groups:
            group["lr"] = value

    def _parameters(self):
        for group in self.param_groups:
            for p in group["params"]:
                yield group, p

    def zero_grad(self) -> None:
        for _, p in self._parameters():
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient; frozen ones (no grad) are left alone."""
        self.steps += 1
        for index, (group, p) in enumerate(self._parameters()):
            if p.grad is None:
                continue
            grad = p.grad
            if group["weight_decay"]:
                grad = grad + p.data * p.dtype.type(group["weight_decay"])
            self._update(p.data, grad, self.state.setdefault(index, {}), group)

    def _update(self, data, grad, state, group) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """``{"steps", "lr", "buffers": {"{param index}/{name}": ndarray}}`` (arrays copied)."""
        buffers = {f"{i}/{k}": v.copy() for i, s in self.state.items() for k, v in s.items()}
        return {"steps": self.steps, "lr": [g["lr"] for g in self.param_groups], "buffers": buffers}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; refuses buffers of another optimizer or other parameters."""
        name = type(self).__name__
        params = [p for _, p in self._parameters()]
        self.state = {}
        for key, value in state["buffers"].items():
            index, buffer = key.split("/", 1)
            if not index.isdigit() or not int(index) < len(params):
                raise ValueError(f"optimizer state: buffer {key!r} names parameter {index}, but the "
                                 f"optimizer has {len(params)} parameters")
            if buffer not in self.buffers:
                raise ValueError(f"optimizer state: buffer {key!r} is not one of {name}'s "
                                 f"({', '.join(self.buffers)}); saved by another optimizer?")
            value = np.array(value)
            if value.ndim and value.shape != params[int(index)].shape:
                raise ValueError(f"optimizer state: buffer {key!r} has shape {value.shape}, its "
                                 f"parameter {params[int(index)].shape}")
            self.state.setdefault(int(index), {})[buffer] = value
        self.steps = validate.integer("optimizer state: steps", state["steps"], 0)
        if len(state["lr"]) != len(self.param_groups):
            raise ValueError(f"optimizer state: {len(state['lr'])} learning rates for "
                             f"{len(self.param_groups)} parameter groups")
        for group, lr in zip(self.param_groups, state["lr"]):
            group["lr"] = validate.number("optimizer state: lr", lr, 0.0)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and Nesterov momentum (torch's formulation:
    ``buf = momentum * buf + grad``; the first step's buffer is the gradient itself)."""

    defaults = {"lr": None, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}
    buffers = ("momentum",)

    def _check(self, group):
        group["momentum"] = validate.probability("SGD: momentum", group["momentum"])
        if group["nesterov"] and not group["momentum"]:
            raise ValueError("SGD: nesterov needs a momentum > 0")

    def _update(self, data, grad, state, group):
        momentum = group["momentum"]
        if momentum:
            buf = state.get("momentum")
            if buf is None:
                buf = state["momentum"] = grad.copy()
            else:
                buf *= data.dtype.type(momentum)
                buf += grad
            grad = grad + buf * data.dtype.type(momentum) if group["nesterov"] else buf
        data -= data.dtype.type(group["lr"]) * grad


class RMSProp(Optimizer):
    """RMSProp as TensorFlow computes it (``tf.compat.v1.train.RMSPropOptimizer``)::

        ms  = decay * ms + (1 - decay) * grad**2
        mom = momentum * mom + lr * grad / sqrt(ms + eps)     # eps inside the root, lr inside mom
        param -= mom

    ``ms`` starts at ``initial_mean_square``: 1.0 as TF1 (the setting MobileNet was trained with;
    it damps the first steps), 0.0 as Keras. Defaults are the paper's: decay 0.9, momentum 0.9,
    eps 1.0.
    """

    defaults = {"lr": None, "decay": 0.9, "momentum": 0.9, "eps": 1.0, "weight_decay": 0.0,
                "initial_mean_square": 1.0}
    buffers = ("mean_square", "momentum")

    def _check(self, group):
        group["decay"] = validate.probability("RMSProp: decay", group["decay"])
        group["momentum"] = validate.probability("RMSProp: momentum", group["momentum"])
        group["eps"] = validate.number("RMSProp: eps", group["eps"], 0.0, low_open=True)
        group["initial_mean_square"] = validate.number("RMSProp: initial_mean_square",
                                                       group["initial_mean_square"], 0.0)

    def _update(self, data, grad, state, group):
        t = data.dtype.type
        if "mean_square" not in state:
            state["mean_square"] = np.full_like(data, group["initial_mean_square"])
            state["momentum"] = np.zeros_like(data)
        ms, mom = state["mean_square"], state["momentum"]
        ms *= t(group["decay"])
        ms += t(1 - group["decay"]) * grad * grad
        mom *= t(group["momentum"])
        mom += t(group["lr"]) * grad / np.sqrt(ms + t(group["eps"]))
        data -= mom


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as torch computes it; weight decay is L2."""

    defaults = {"lr": None, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    buffers = ("exp_avg", "exp_avg_sq", "step")

    def _check(self, group):
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam: betas: expected a pair of numbers, got {validate.show(betas)}")
        group["betas"] = tuple(validate.probability(f"Adam: betas[{i}]", b) for i, b in enumerate(betas))
        group["eps"] = validate.number("Adam: eps", group["eps"], 0.0, low_open=True)

    def _update(self, data, grad, state, group):
        t = data.dtype.type
        beta1, beta2 = group["betas"]
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = np.zeros_like(data), np.zeros_like(data)
            state["step"] = np.zeros((), np.int64)
        state["step"] += 1
        step = int(state["step"])
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= t(beta1)
        m += t(1 - beta1) * grad
        v *= t(beta2)
        v += t(1 - beta2) * grad * grad
        step_size = group["lr"] / (1 - beta1 ** step)
        denom = np.sqrt(v) / t(math.sqrt(1 - beta2 ** step)) + t(group["eps"])
        data -= t(step_size) * m / denom


def clip_grad_norm(params: Iterable[Tensor], max_norm: float) -> float:
    """Scale gradients in place so their global L2 norm is at most ``max_norm``; returns the norm
    before clipping. ``max_norm`` must be finite and > 0 (a negative one would reverse the
    gradients)."""
    max_norm = validate.number("clip_grad_norm: max_norm", max_norm, 0.0, low_open=True)
    grads = [p.grad for p in params if p.grad is not None]
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    if norm > max_norm:
        for g in grads:
            g *= g.dtype.type(max_norm / (norm + 1e-6))
    return norm


class ExponentialMovingAverage:
    """Shadow copies ``avg = decay * avg + (1 - decay) * param``, updated after each step.

    Evaluate with the averaged weights via ``ema.copy_to(model)`` (keep a ``state_dict`` to go
    back), as TF-slim's moving-average evaluation does.
    """

    def __init__(self, named_parameters, decay: float = 0.9999):
        self.decay = validate.number("ExponentialMovingAverage: decay", decay, 0.0, 1.0,
                                     low_open=True, high_open=True)
        self.shadow = {name: p.data.copy() for name, p in named_parameters}

    def update(self, named_parameters, num_updates: int | None = None) -> None:
        """Fold the current weights in. With ``num_updates`` (the steps taken so far) the decay is
        ``min(decay, (1 + n) / (10 + n))``, as TF's, so the initial weights fade out quickly."""
        decay = self.decay if num_updates is None else min(self.decay, (1 + num_updates) / (10 + num_updates))
        for name, p in named_parameters:
            avg = self.shadow[name]
            avg *= avg.dtype.type(decay)
            avg += avg.dtype.type(1 - decay) * p.data

    def copy_to(self, model) -> None:
        model.load_state_dict(self.shadow, strict=False)


# -- learning-rate schedules: step -> learning rate, pure functions of the step count ---------

class ExponentialDecay:
    """``lr * rate ** (step / decay_steps)``, floored to whole periods when ``staircase`` (the
    MobileNet recipe: rate 0.94 every 2 epochs)."""

    def __init__(self, lr: float, decay_steps: int, rate: float = 0.94, staircase: bool = True):
        self.lr = validate.number("ExponentialDecay: lr", lr, 0.0)
        self.decay_steps = validate.integer("ExponentialDecay: decay_steps", decay_steps, 1)
        self.rate = validate.number("ExponentialDecay: rate", rate, 0.0, 1.0, low_open=True)
        self.staircase = staircase

    def __call__(self, step: int) -> float:
        periods = step / self.decay_steps
        return self.lr * self.rate ** (math.floor(periods) if self.staircase else periods)


class StepDecay:
    """``lr * gamma ** (step // step_size)``."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1):
        self.lr = validate.number("StepDecay: lr", lr, 0.0)
        self.step_size = validate.integer("StepDecay: step_size", step_size, 1)
        self.gamma = validate.number("StepDecay: gamma", gamma, 0.0, 1.0, low_open=True)

    def __call__(self, step: int) -> float:
        return self.lr * self.gamma ** (step // self.step_size)


class CosineDecay:
    """Half a cosine from ``lr`` at step 0 to ``min_lr`` at ``total_steps``."""

    def __init__(self, lr: float, total_steps: int, min_lr: float = 0.0):
        self.lr = validate.number("CosineDecay: lr", lr, 0.0)
        self.total_steps = validate.integer("CosineDecay: total_steps", total_steps, 1)
        self.min_lr = validate.number("CosineDecay: min_lr", min_lr, 0.0, self.lr)

    def __call__(self, step: int) -> float:
        progress = min(step, self.total_steps) / self.total_steps
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class Warmup:
    """Linear warm-up from ~0 to ``schedule(warmup_steps)`` over the first steps, then ``schedule``."""

    def __init__(self, schedule, warmup_steps: int):
        self.schedule = schedule
        self.warmup_steps = validate.integer("Warmup: warmup_steps", warmup_steps, 0)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.schedule(self.warmup_steps) * (step + 1) / self.warmup_steps
        return self.schedule(step)

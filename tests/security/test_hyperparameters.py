"""Every hyper-parameter has a range, refused the same way through the API (ValueError naming
it) and the command line (a usage error, exit 2, naming the flag). Nothing here trains: the
command-line cases fail while parsing, before any data is read."""

import math

import numpy as np
import pytest

from npmobilenet import Tensor, build_model
from npmobilenet.cli import main
from npmobilenet.data import EvalTransform, Loader, digits, stratified_split
from npmobilenet.optim import (SGD, Adam, CosineDecay, ExponentialMovingAverage, RMSProp, Warmup,
                               clip_grad_norm)
from npmobilenet.train import TrainConfig


def parameter():
    return Tensor(np.ones(3, np.float32), requires_grad=True)


@pytest.mark.parametrize("make, message", [
    (lambda ps: SGD(ps, lr=math.nan), r"SGD: lr: expected a finite number, got NaN"),
    (lambda ps: SGD(ps, lr=math.inf), r"SGD: lr: expected a finite number"),
    (lambda ps: SGD(ps, lr=0.0), r"SGD: lr: expected a number > 0"),
    (lambda ps: SGD(ps, lr=0.1, momentum=1.0), r"SGD: momentum: expected a number in \[0.0, 1.0\)"),
    (lambda ps: SGD(ps, lr=0.1, momentum=5), r"SGD: momentum"),
    (lambda ps: SGD(ps, lr=0.1, weight_decay=-1), r"SGD: weight_decay: expected a number >= 0"),
    (lambda ps: SGD(ps, lr=0.1, weight_decay=math.nan), r"SGD: weight_decay: expected a finite"),
    (lambda ps: SGD(ps, lr=0.1, nesterov=True), r"SGD: nesterov needs a momentum > 0"),
    (lambda ps: Adam(ps, lr=0.1, betas=(0.9, 1.0)), r"Adam: betas\[1\]: expected a number in \[0.0, 1.0\)"),
    (lambda ps: Adam(ps, lr=0.1, betas=(1.0, 0.999)), r"Adam: betas\[0\]"),
    (lambda ps: Adam(ps, lr=0.1, betas=(0.9,)), r"Adam: betas: expected a pair of numbers"),
    (lambda ps: Adam(ps, lr=0.1, eps=0), r"Adam: eps: expected a number > 0"),
    (lambda ps: RMSProp(ps, lr=0.1, decay=1.5), r"RMSProp: decay: expected a number in \[0.0, 1.0\)"),
    (lambda ps: RMSProp(ps, lr=0.1, momentum=-0.1), r"RMSProp: momentum"),
    (lambda ps: RMSProp(ps, lr=0.1, eps=0.0), r"RMSProp: eps: expected a number > 0"),
    (lambda ps: SGD([{"params": ps, "lr": math.nan}], lr=0.1), r"SGD: lr: expected a finite number"),
])
def test_optimizers_refuse_values_that_would_poison_the_weights(make, message):
    with pytest.raises(ValueError, match=message):
        make([parameter()])


def test_edge_values_are_accepted_and_a_step_stays_finite():
    for make in (lambda ps: SGD(ps, lr=1e-3, momentum=0.0), lambda ps: Adam(ps, lr=1e-3, betas=(0.0, 0.0)),
                 lambda ps: RMSProp(ps, lr=1e-3, decay=0.0, momentum=0.0, weight_decay=0.0)):
        p = parameter()
        opt = make([p])
        p.grad = np.full(3, 0.5, np.float32)
        opt.step()
        assert np.isfinite(p.data).all()


def test_a_schedule_cannot_set_a_non_finite_or_negative_learning_rate():
    opt = SGD([parameter()], lr=0.1)
    opt.lr = 0.0  # the end of a cosine schedule
    for bad in (math.nan, math.inf, -1e-3):
        with pytest.raises(ValueError, match="SGD: lr"):
            opt.lr = bad
    assert opt.lr == 0.0


def test_clipping_averaging_and_schedules_are_ranged():
    p = parameter()
    p.grad = np.ones(3, np.float32)
    for bad in (-1.0, 0.0, math.nan):  # a negative norm would reverse the gradient: ascent
        with pytest.raises(ValueError, match="clip_grad_norm: max_norm"):
            clip_grad_norm([p], bad)
    np.testing.assert_array_equal(p.grad, np.ones(3, np.float32))
    for bad in (0.0, 1.0, math.nan):
        with pytest.raises(ValueError, match="ExponentialMovingAverage: decay"):
            ExponentialMovingAverage([("p", p)], bad)
    with pytest.raises(ValueError, match="CosineDecay: total_steps: expected an integer >= 1"):
        CosineDecay(0.1, 0)
    with pytest.raises(ValueError, match="CosineDecay: lr: expected a finite number"):
        CosineDecay(math.nan, 10)
    with pytest.raises(ValueError, match="Warmup: warmup_steps"):
        Warmup(lambda step: 0.1, -1)


def test_optimizer_state_of_another_optimizer_is_refused():
    p = parameter()
    sgd = SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(3, np.float32)
    sgd.step()
    adam = Adam([parameter()], lr=0.1)
    with pytest.raises(ValueError, match=r"buffer '0/momentum' is not one of Adam's"):
        adam.load_state_dict(sgd.state_dict())
    other_shape = SGD([Tensor(np.ones(4, np.float32), requires_grad=True)], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"buffer '0/momentum' has shape \(3,\)"):
        other_shape.load_state_dict(sgd.state_dict())


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, r"epochs: expected an integer >= 1, got 0"),
    ("epochs", 2.5, r"epochs: expected an integer, got 2.5"),
    ("epochs", True, r"epochs: expected an integer, got true"),
    ("lr", math.nan, r"lr: expected a finite number"),
    ("lr", 0.0, r"lr: expected a number > 0"),
    ("momentum", 5.0, r"momentum: expected a number in \[0.0, 1.0\), got 5.0"),
    ("weight_decay", -1.0, r"weight_decay: expected a number >= 0"),
    ("warmup_epochs", 1e9, r"warmup_epochs: expected a number in \[0.0, 15\], got 1000000000.0"),
    ("warmup_epochs", -1.0, r"warmup_epochs"),
    ("label_smoothing", 1.0, r"label_smoothing: expected a number in \[0.0, 1.0\)"),
    ("clip_norm", -1.0, r"clip_norm: expected a number > 0"),
    ("clip_norm", math.nan, r"clip_norm: expected a finite number"),
    ("ema_decay", 1.0, r"ema_decay: expected a number in \(0.0, 1.0\)"),
    ("seed", -1, r"seed: expected an integer >= 0"),
    ("optimizer", "adamw", r"optimizer: expected one of"),
])
def test_train_config_refuses_each_bad_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_train_config_keeps_edge_values():
    config = TrainConfig(epochs=3, momentum=0.0, weight_decay=0.0, warmup_epochs=3, clip_norm=None,
                         ema_decay=None, seed=0)
    assert (config.epochs, config.momentum, config.warmup_epochs, config.clip_norm) == (3, 0.0, 3.0, None)


def test_data_and_build_options_are_ranged_in_the_api():
    data = digits(8)
    transform = EvalTransform({"name": "t", "resize": 8, "crop": 8, "mean": [0.5] * 3, "std": [0.5] * 3})
    with pytest.raises(ValueError, match=r"workers: expected an integer in \[1, 64\], got -3"):
        Loader(data, transform, 4, workers=-3)
    with pytest.raises(ValueError, match=r"batch_size: expected an integer >= 1, got 0"):
        Loader(data, transform, 0)
    with pytest.raises(ValueError, match=r"val_split: expected a number in \(0.0, 1.0\)"):
        stratified_split(data.labels(), 1.0, 0)
    for option in ({"depth_multiplier": 0}, {"input_size": 0}):
        with pytest.raises(ValueError, match=next(iter(option))):
            build_model("mobilenet_v1", **option)


def usage_error(capsys, argv) -> str:
    """Run the command line, expect argparse's exit 2, return its one error line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("usage:")
    return lines[-1]


TRAIN = ["train", "--data", "builtin:digits", "--out", "unused"]


@pytest.mark.parametrize("flag, value, message", [
    ("--epochs", "0", "argument --epochs: expected an integer >= 1, got 0"),
    ("--input-size", "0", "argument --input-size: expected an integer in [1, 8192], got 0"),
    ("--depth-multiplier", "0", "argument --depth-multiplier: expected a number in (0, 64.0], got 0.0"),
    ("--momentum", "5", "argument --momentum: expected a number in [0.0, 1.0), got 5.0"),
    ("--weight-decay", "-1", "argument --weight-decay: expected a number >= 0.0, got -1.0"),
    ("--clip-norm", "-1", "argument --clip-norm: expected a number > 0.0, got -1.0"),
    ("--clip-norm", "nan", "argument --clip-norm: expected a finite number, got NaN"),
    ("--warmup-epochs", "1e9", "warmup_epochs: expected a number in [0.0, 15], got 1000000000.0"),
    ("--workers", "-3", "argument --workers: expected an integer in [1, 64], got -3"),
    ("--workers", "0", "argument --workers: expected an integer in [1, 64], got 0"),
    ("--lr", "nan", "argument --lr: expected a finite number, got NaN"),
    ("--lr", "0", "argument --lr: expected a number > 0.0, got 0.0"),
    ("--label-smoothing", "1", "argument --label-smoothing: expected a number in [0.0, 1.0), got 1.0"),
    ("--ema", "1", "argument --ema: expected a number in (0.0, 1.0), got 1.0"),
    ("--batch-size", "0", "argument --batch-size: expected an integer in [1, 4096], got 0"),
    ("--val-split", "1", "argument --val-split: expected a number in (0, 1), got 1.0"),
    ("--val-split", "0", "argument --val-split: expected a number in (0, 1), got 0.0"),
    ("--export-samples", "-1", "argument --export-samples: expected an integer >= 0, got -1"),
    ("--seed", "-1", "argument --seed: expected an integer >= 0, got -1"),
    ("--epochs", "2.5", "argument --epochs: expected an integer, got '2.5'"),
])
def test_train_flags_out_of_range_are_usage_errors(capsys, flag, value, message):
    assert usage_error(capsys, [*TRAIN, flag, value]) == f"npmobilenet train: error: {message}"


def test_warmup_is_judged_against_the_epochs_given(capsys):
    line = usage_error(capsys, [*TRAIN, "--epochs", "2", "--warmup-epochs", "3"])
    assert line == "npmobilenet train: error: warmup_epochs: expected a number in [0.0, 2], got 3.0"


def test_resume_and_overwrite_exclude_each_other(capsys):
    line = usage_error(capsys, [*TRAIN, "--resume", "--overwrite"])
    assert line == "npmobilenet train: error: argument --overwrite: not allowed with argument --resume"


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--workers", "0"), ("--val-split", "0"),
                                         ("--seed", "-1")])
def test_evaluate_flags_out_of_range_are_usage_errors(capsys, flag, value):
    line = usage_error(capsys, ["evaluate", "--weights", "w", "--data", "d", flag, value])
    assert line.startswith(f"npmobilenet evaluate: error: argument {flag}: expected")


def test_help_shows_the_defaults(capsys):
    for command, shown in (("train", ["(default: 0.05 for sgd, 0.045 for rmsprop, 0.001 for adam)",
                                      "(default: 32)", "(default: runs/train)",
                                      "default 15 for builtin:digits"]),
                           ("evaluate", ["(default: 32)", "(default: 2)"])):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())  # unwrapped
        for default in shown:
            assert default in text, (command, default)
        assert "(default: None)" not in text and "(default: False)" not in text

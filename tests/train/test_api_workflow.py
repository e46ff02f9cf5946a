"""The Python API as a torch user drives it: a loop over the loader reshuffles every pass, the
default batch-norm momentum gives eval-mode accuracy that matches train mode after a short run
(and ``recalibrate_batch_norm`` repairs statistics that lag), the optimizer's learning rate
defaults to its own, freezing survives ``replace_head``, and the submodules are reachable
from ``import npmobilenet``."""

import subprocess
import sys

import numpy as np
import pytest

import npmobilenet as nm
from npmobilenet import functional as F
from npmobilenet.autograd import no_grad
from npmobilenet.data import ArrayImages, EvalTransform, Loader, TrainTransform, digits
from npmobilenet.optim import RMSProp
from npmobilenet.train import (ArrayLoader, TrainConfig, make_optimizer, recalibrate_batch_norm,
                               replace_head)

SIZE = 32
PRESET = {"name": "test", "resize": SIZE, "crop": SIZE, "mean": [0.5] * 3, "std": [0.5] * 3}


def test_each_pass_over_a_loader_is_the_next_epoch_and_set_epoch_resumes():
    data = ArrayImages(np.random.default_rng(0).integers(0, 256, (10, 12, 12, 3), np.uint8),
                       np.arange(10) % 2, {"a": 0, "b": 1})
    preset = {**PRESET, "resize": 8, "crop": 8}
    loader = Loader(data, TrainTransform(preset, scale=(0.3, 1.0)), batch_size=4, shuffle=True, seed=3)
    passes = [[(x.copy(), y.copy()) for x, y in loader] for _ in range(2)]
    for epoch, batches in enumerate(passes):  # pass k is exactly epoch k: order and augmentation
        for (x, y), (ex, ey) in zip(batches, loader.epoch(epoch), strict=True):
            np.testing.assert_array_equal(x, ex)
            np.testing.assert_array_equal(y, ey)
    assert [y.tolist() for _, y in passes[0]] != [y.tolist() for _, y in passes[1]]
    assert not np.array_equal(passes[0][0][0], passes[1][0][0])
    loader.set_epoch(0)  # as a resumed run does: the next pass is epoch 0 again
    np.testing.assert_array_equal(next(iter(loader))[0], passes[0][0][0])
    cached = ArrayLoader(np.arange(10.0)[:, None], np.arange(10), 5, shuffle=True, seed=1)
    first, second = [np.concatenate([y for _, y in cached]) for _ in range(2)]
    assert first.tolist() != second.tolist() and sorted(second) == list(range(10))


@pytest.fixture(scope="module")
def three_digits():
    """Fives, sixes and sevens: (training, held-out) datasets."""
    data = digits(SIZE)
    chosen = np.flatnonzero(np.isin(data.labels(), [5, 6, 7]))
    images = ArrayImages(data.images[chosen], data.labels()[chosen] - 5, {"5": 0, "6": 1, "7": 2})
    order = np.random.default_rng(0).permutation(len(images))
    return images.subset(order[:400]), images.subset(order[400:])


def _fit(model, train, epochs=3):
    """A torch-style loop: ``for x, y in loader`` each epoch."""
    loader = Loader(train, EvalTransform(PRESET), batch_size=16, shuffle=True, seed=0)
    opt = make_optimizer(model, TrainConfig(optimizer="sgd", weight_decay=0.0))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()


def _accuracy(model, data, training: bool) -> float:
    """Top-1 with the moving statistics (eval) or each batch's own (train mode, no update kept)."""
    saved = {name: value.copy() for name, value in model.named_buffers()}
    model.train(training)
    with no_grad():
        right = sum(int((model(x).data.argmax(1) == y).sum())
                    for x, y in Loader(data, EvalTransform(PRESET), batch_size=64).epoch(0))
    model.load_state_dict(saved, strict=False)
    return right / len(data)


def test_eval_mode_scores_what_train_mode_does_after_a_short_run(three_digits):
    train, held_out = three_digits
    model = nm.build_model("mobilenet_v1", depth_multiplier=0.25, input_size=SIZE, num_classes=3, seed=0)
    assert model.graph.options.bn_momentum == 0.1  # the one momentum, as the CLI's
    _fit(model, train)
    batch_statistics, moving_statistics = _accuracy(model, held_out, True), _accuracy(model, held_out, False)
    assert batch_statistics > 0.8
    assert moving_statistics >= batch_statistics - 0.05, (moving_statistics, batch_statistics)


def test_recalibration_repairs_statistics_that_lag(three_digits):
    train, held_out = three_digits
    # TF-slim's decay 0.9997, the old API default: after 3 short epochs the statistics are stale.
    model = nm.build_model("mobilenet_v1", depth_multiplier=0.25, input_size=SIZE, num_classes=3, seed=0,
                           bn_momentum=0.0003)
    _fit(model, train)
    batch_statistics, stale = _accuracy(model, held_out, True), _accuracy(model, held_out, False)
    assert stale < 0.6 < batch_statistics
    recalibrate_batch_norm(model, Loader(train, EvalTransform(PRESET), batch_size=64))
    assert _accuracy(model, held_out, False) >= batch_statistics - 0.05
    # Frozen layers keep their statistics; the others follow the data given.
    before = model.freeze(trainable=tuple(n.name for n in model.graph.nodes if n.name != "Conv2d_0")).state_dict()
    recalibrate_batch_norm(model, Loader(held_out, EvalTransform(PRESET), batch_size=64), max_batches=1)
    after = model.state_dict()
    for key in ("Conv2d_0/BatchNorm/moving_mean", "Conv2d_0/BatchNorm/moving_variance"):
        np.testing.assert_array_equal(after[key], before[key])
    assert not np.array_equal(after["Conv2d_1_depthwise/BatchNorm/moving_mean"],
                              before["Conv2d_1_depthwise/BatchNorm/moving_mean"])
    assert after["Conv2d_1_depthwise/BatchNorm/moving_mean"].dtype == np.float32


def test_each_optimizer_has_its_own_default_learning_rate_and_options():
    assert [TrainConfig(optimizer=name).lr for name in ("sgd", "rmsprop", "adam")] == [0.05, 0.045, 0.001]
    assert TrainConfig(optimizer="adam", lr=0.01).lr == 0.01
    keras = TrainConfig(optimizer="rmsprop", rho=0.8, eps=0.5, rmsprop_start="keras")
    model = nm.build_model("mobilenet_v1", depth_multiplier=0.25, input_size=SIZE, num_classes=2)
    optimizer = make_optimizer(model, keras)
    assert isinstance(optimizer, RMSProp)
    group = optimizer.param_groups[0]
    assert (group["decay"], group["eps"], group["initial_mean_square"], group["lr"]) == (0.8, 0.5, 0.0, 0.045)
    assert make_optimizer(model, TrainConfig(optimizer="rmsprop")).param_groups[0]["initial_mean_square"] == 1.0
    with pytest.raises(ValueError, match=r"^rho: applies to rmsprop, not sgd$"):
        TrainConfig(optimizer="sgd", rho=0.9)
    with pytest.raises(ValueError, match=r"^eps: applies to rmsprop and adam, not sgd$"):
        TrainConfig(eps=1e-3)
    with pytest.raises(ValueError, match=r"rmsprop_start: expected one of \['keras', 'tf'\], got 'torch'"):
        TrainConfig(optimizer="rmsprop", rmsprop_start="torch")


def test_freezing_survives_replace_head_and_repr_counts_it():
    model = nm.build_model("mobilenet_v1", depth_multiplier=0.25, input_size=SIZE, num_classes=5, seed=0)
    for param in model.parameters():  # torch-style freezing
        param.requires_grad = False
    new = replace_head(model, 3, seed=1)
    trainable = [name for name, p in new.named_parameters() if p.requires_grad]
    assert trainable == ["Logits/weights", "Logits/biases"]
    head = 256 * 3 + 3
    frozen = sum(p.data.size for p in new.parameters()) - head
    assert repr(new) == (f"Model('mobilenet_v1', 30 nodes, {head:,} trainable + {frozen:,} frozen "
                         f"parameters, float32, train)")
    # freeze() (which also fixes the moving statistics) carries over too, minus the new head.
    frozen_model = replace_head(model.unfreeze().freeze(trainable=("Logits",)), 4)
    assert frozen_model.frozen == model.frozen - {"Logits"} and "Conv2d_0" in frozen_model.frozen


def test_public_submodules_are_attributes_after_import():
    code = ("import npmobilenet as nm; "
            "print(nm.optim.SGD.__name__, nm.data.Loader.__name__, nm.train.Trainer.__name__, "
            "nm.io.load.__name__, nm.functional.cross_entropy.__name__, nm.kinds.KINDS['conv'].name, "
            "nm.architecture.build_graph.__name__, nm.validate.LIMITS['classes'], "
            "nm.testing.check_grad.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SGD", "Loader", "Trainer", "load", "cross_entropy", "conv",
                                     "build_graph", "100000", "check_grad"]

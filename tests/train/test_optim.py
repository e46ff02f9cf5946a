"""Optimizer and schedule details beyond the torch equivalence test."""

import numpy as np
import pytest

from npmobilenet import Tensor
from npmobilenet.optim import (SGD, Adam, CosineDecay, ExponentialDecay, ExponentialMovingAverage,
                               RMSProp, StepDecay, Warmup, clip_grad_norm, decay_groups)


def test_rmsprop_first_step_by_hand():
    p = Tensor(np.array([1.0, -2.0], np.float32), requires_grad=True)
    p.grad = np.array([0.5, 2.0], np.float32)
    RMSProp([p], lr=0.1).step()
    ms = 0.9 * 1.0 + 0.1 * np.array([0.25, 4.0])  # TF1 starts the mean square at 1
    expected = np.array([1.0, -2.0]) - 0.1 * np.array([0.5, 2.0]) / np.sqrt(ms + 1.0)
    assert p.data.dtype == np.float32
    np.testing.assert_allclose(p.data, expected, rtol=1e-6)


def test_updates_stay_float32_and_skip_frozen_parameters():
    trained = Tensor(np.ones(3, np.float32), requires_grad=True)
    frozen = Tensor(np.ones(3, np.float32), requires_grad=False)
    for make in (lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: RMSProp(ps, lr=0.1),
                 lambda ps: Adam(ps, lr=0.1)):
        opt = make([trained, frozen])
        trained.grad = np.full(3, 0.5, np.float32)
        opt.step()
        assert trained.data.dtype == np.float32
        assert all(v.dtype == np.float32 for s in opt.state.values() for k, v in s.items() if k != "step")
        np.testing.assert_array_equal(frozen.data, np.ones(3, np.float32))


def test_decay_groups_skip_depthwise_and_batch_norm():
    named = [(n, Tensor(np.ones(2, np.float32), requires_grad=True)) for n in
             ("Conv2d_0/weights", "Conv2d_1_depthwise/weights", "Conv2d_0/BatchNorm/gamma", "Logits/biases")]
    decayed, plain = decay_groups(named, 1e-4)
    assert [p is named[0][1] for p in decayed["params"]] == [True]
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0


def test_state_dict_round_trip_continues_identically():
    def run(steps, resume_at=None):
        p = Tensor(np.linspace(-1, 1, 4), requires_grad=True)
        opt = Adam([p], lr=0.05)
        for step in range(steps):
            if step == resume_at:
                saved, data = opt.state_dict(), p.data.copy()
                p = Tensor(data, requires_grad=True)
                opt = Adam([p], lr=0.05)
                opt.load_state_dict(saved)
            p.grad = np.sin(p.data * (step + 1))
            opt.step()
        return p.data
    np.testing.assert_array_equal(run(6), run(6, resume_at=3))


def test_schedules():
    staircase = ExponentialDecay(0.045, decay_steps=200, rate=0.94)  # 2 epochs of 100 steps
    assert staircase(199) == pytest.approx(0.045) and staircase(200) == pytest.approx(0.045 * 0.94)
    assert StepDecay(1.0, 10, 0.5)(25) == pytest.approx(0.25)
    cosine = CosineDecay(1.0, 100)
    assert cosine(0) == pytest.approx(1.0) and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    warm = Warmup(StepDecay(1.0, 1000), warmup_steps=4)
    assert [warm(s) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_clip_grad_norm_and_moving_average():
    a, b = Tensor(np.zeros(2), requires_grad=True), Tensor(np.zeros(1), requires_grad=True)
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    assert np.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum()) == pytest.approx(1.0, rel=1e-5)
    ema = ExponentialMovingAverage([("w", a)], decay=0.5)
    a.data[:] = 2.0
    ema.update([("w", a)])
    np.testing.assert_allclose(ema.shadow["w"], [1.0, 1.0])
    ema.update([("w", a)], num_updates=0)  # TF's warm-up: decay min(0.5, 1/10)
    np.testing.assert_allclose(ema.shadow["w"], [0.1 * 1.0 + 0.9 * 2.0] * 2)
    ema.update([("w", Tensor(np.zeros(2)))], num_updates=1000)  # decay back at 0.5
    np.testing.assert_allclose(ema.shadow["w"], [0.5 * 1.9] * 2)


def test_bad_options_are_named():
    p = Tensor(np.zeros(2, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match=r"unknown options \['momentun'\]"):
        SGD([p], lr=0.1, momentun=0.9)
    with pytest.raises(ValueError, match=r"SGD: lr: expected a number > 0.0, got -1.0"):
        SGD([p], lr=-1.0)

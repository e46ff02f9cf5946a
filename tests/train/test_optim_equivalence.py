"""20 steps of SGD-momentum, RMSProp (TF semantics) and Adam on a small MobileNet, against a torch
twin trained from identical weights on identical batches: per-step losses within 1e-6 (float64)."""

import numpy as np
import pytest
import torch

import npmobilenet.functional as F
from npmobilenet.model import build_model
from npmobilenet.optim import SGD, Adam, RMSProp
from npmobilenet.architecture import load_spec
from tests.test_model_torch import twin_forward

STEPS = 20


def tf_rmsprop_step(params, state, lr, decay=0.9, momentum=0.9, eps=1.0):
    """TensorFlow's RMSProp, written out in torch (torch's own puts eps outside the root)."""
    with torch.no_grad():
        for i, p in enumerate(params):
            ms, mom = state.setdefault(i, (torch.ones_like(p), torch.zeros_like(p)))
            ms.mul_(decay).add_((1 - decay) * p.grad * p.grad)
            mom.mul_(momentum).add_(lr * p.grad / torch.sqrt(ms + eps))
            p.sub_(mom)


# Learning rates are small on purpose: a freshly initialised batch-normalised net on random data
# has a very sharp loss surface, so with large steps any two correct implementations (or the same
# one with another summation order) drift apart by ~(1 + lr * curvature) per step. At these rates
# rounding-level differences stay far below 1e-6 over 20 steps, while a wrong update rule (eps
# outside the root, a missing bias correction) still changes the losses by far more.
OPTIMIZERS = {
    "sgd-momentum": (lambda ps: SGD(ps, lr=5e-4, momentum=0.9, nesterov=True, weight_decay=1e-4),
                     lambda ps: torch.optim.SGD(ps, lr=5e-4, momentum=0.9, nesterov=True, weight_decay=1e-4)),
    "rmsprop-tf": (lambda ps: RMSProp(ps, lr=1e-4), None),
    "adam": (lambda ps: Adam(ps, lr=1e-4, weight_decay=1e-4),
             lambda ps: torch.optim.Adam(ps, lr=1e-4, weight_decay=1e-4)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_losses_match_torch_step_by_step(name):
    make_ours, make_theirs = OPTIMIZERS[name]
    model = build_model("mobilenet_v2", depth_multiplier=0.35, input_size=64, num_classes=5,
                        dropout=0.0, dtype=np.float64, seed=0)
    state = model.state_dict()
    names = [n for n, _ in model.named_parameters()]
    P = {k: torch.tensor(state[k], requires_grad=True) for k in names}
    B = {k: torch.tensor(v) for k, v in state.items() if k not in P}
    ours, theirs, rms_state = make_ours(model.parameters()), None, {}
    if make_theirs is not None:
        theirs = make_theirs([P[k] for k in names])
    spec, opts = load_spec("mobilenet_v2"), model.graph.options.to_dict()
    rng = np.random.default_rng(1)
    for step in range(STEPS):
        x = rng.standard_normal((8, 64, 64, 3))
        y = rng.integers(0, 5, 8)
        ours.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        ours.step()

        for p in P.values():
            p.grad = None
        expected = torch.nn.functional.cross_entropy(
            twin_forward(spec, opts, P, B, torch.tensor(x), True), torch.tensor(y))
        expected.backward()
        if theirs is not None:
            theirs.step()
        else:
            tf_rmsprop_step([P[k] for k in names], rms_state, lr=1e-4)

        assert loss.dtype == np.float64
        assert abs(loss.item() - expected.item()) <= 1e-6 * abs(expected.item()), (step, loss.item(),
                                                                                    expected.item())
    # The models really trained: the weights moved from where they started.
    assert not np.allclose(model.state_dict()["Conv/weights"], state["Conv/weights"], rtol=0, atol=1e-6)

"""Whole models against a torch twin: logits, every parameter gradient, moving statistics.

The twin is built here from the spec's rows (its own expansion: TF-slim v1 names, torchvision's
bottleneck rule for v2) using the independent torch ops of tests/ops/torch_twins.py, with
explicit padding for TF SAME. It takes the model's parameters by name, so it also checks the
names and shapes the model declares.
"""

import numpy as np
import pytest
import torch

import npmobilenet.functional as F
from npmobilenet.model import build_model
from npmobilenet.architecture import load_spec
from tests.ops import torch_twins as tt


def twin_forward(spec, opts, P, B, x, training):
    """Run the architecture described by ``spec`` with torch on NHWC ``x``."""
    pad = (lambda k: "SAME") if opts["padding"] == "SAME" else (lambda k: k // 2)

    def unit(name, x, stride, depthwise=False, activation=opts["activation"]):
        w = P[f"{name}/weights"]
        y = (tt.depthwise_conv2d if depthwise else tt.conv2d)(x, w, stride, pad(w.shape[0]))
        return tt.batch_norm(y, P[f"{name}/BatchNorm/gamma"], P[f"{name}/BatchNorm/beta"],
                             B[f"{name}/BatchNorm/moving_mean"], B[f"{name}/BatchNorm/moving_variance"],
                             training, opts["bn_momentum"], opts["bn_eps"], activation)

    if spec["family"] == "v1":
        for i, row in enumerate(spec["body"]):
            if row["type"] == "Conv":
                x = unit(f"Conv2d_{i}", x, row["stride"])
            else:
                x = unit(f"Conv2d_{i}_depthwise", x, row["stride"], depthwise=True)
                x = unit(f"Conv2d_{i}_pointwise", x, 1)
    else:
        blocks = convs = 0
        for row in spec["body"]:
            if row["type"] == "Conv":
                x = unit("Conv" if convs == 0 else f"Conv_{convs}", x, row["stride"])
                convs += 1
                continue
            for i in range(row["n"]):
                name = "expanded_conv" if blocks == 0 else f"expanded_conv_{blocks}"
                blocks += 1
                stride = row["s"] if i == 0 else 1
                h = unit(f"{name}/expand", x, 1) if row["t"] != 1 else x
                h = unit(f"{name}/depthwise", h, stride, depthwise=True)
                h = unit(f"{name}/project", h, 1, activation=None)
                x = x + h if stride == 1 and x.shape[-1] == h.shape[-1] else h
    if opts["global_pool"]:
        x = x.mean(dim=(1, 2))
    else:
        x = tt.avg_pool2d(x, (min(x.shape[1], 7), min(x.shape[2], 7)), 2).flatten(1)
    return x @ P["Logits/weights"] + P["Logits/biases"]


CASES = {  # name: (spec, options, input size, batch)
    "v1-SAME": ("mobilenet_v1", {"padding": "SAME"}, 67, 2),
    "v1-symmetric-relu": ("mobilenet_v1", {"padding": "symmetric", "activation": "relu",
                                           "global_pool": True}, 64, 2),
    "v2-symmetric": ("mobilenet_v2", {"padding": "symmetric"}, 64, 2),
    "v2-SAME": ("mobilenet_v2", {"padding": "SAME", "bn_eps": 1e-3, "bn_momentum": 0.003}, 67, 4),
}
# float32 training: a deep batch-normalised net is ill-conditioned there (a ReLU6 mask bit that
# flips under rounding is spread over a whole channel by the batch-norm backward), and torch's
# own float32 gradients were seen 3% away from float64 on some of these cases. So float32
# training is compared with the float64 twin (same float32-rounded inputs and parameters), on
# the two cases whose float32 gradients are well conditioned; float32 eval is compared with the
# float32 twin on every case.
RUNS = ([(case, np.float64, np.float64, training, 1e-8) for case in CASES for training in (True, False)]
        + [(case, np.float32, np.float32, False, 1e-4) for case in CASES]
        + [(case, np.float32, np.float64, True, 1e-4) for case in ("v1-SAME", "v2-SAME")])


def _rel(got, expected):
    return np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-30)


@pytest.mark.parametrize("case, dtype, twin_dtype, training, tol", RUNS, ids=[
    f"{r[0]}-{np.dtype(r[1]).name}-{'train' if r[3] else 'eval'}" for r in RUNS])
def test_model_matches_torch_twin(case, dtype, twin_dtype, training, tol):
    spec_name, options, size, batch = CASES[case]
    model = build_model(spec_name, depth_multiplier=0.35, input_size=size, num_classes=7,
                        dropout=0.0, dtype=dtype, seed=3, **options)
    rng = np.random.default_rng(4)
    # Non-trivial batch-norm parameters and moving statistics, so every term matters.
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith(("gamma", "moving_variance")):
            state[key] = rng.uniform(0.5, 1.5, value.shape).astype(dtype)
        elif key.endswith(("beta", "moving_mean", "biases")):
            state[key] = rng.normal(0, 0.1, value.shape).astype(dtype)
    model.load_state_dict(state)
    model.train(training)
    x = rng.standard_normal((batch, size, size, 3)).astype(dtype)
    cotangent = rng.standard_normal((batch, 7)).astype(dtype)

    logits = model(x)
    F.sum(F.mul(logits, cotangent)).backward()

    names = [name for name, _ in model.named_parameters()]
    P = {k: torch.tensor(state[k].astype(twin_dtype), requires_grad=True) for k in names}
    B = {k: torch.tensor(v.astype(twin_dtype)) for k, v in state.items() if k not in P}
    opts = model.graph.options.to_dict()
    expected = twin_forward(load_spec(spec_name), opts, P, B, torch.tensor(x.astype(twin_dtype)),
                            training)
    (expected * torch.tensor(cotangent.astype(twin_dtype))).sum().backward()

    assert logits.dtype == dtype
    assert _rel(logits.data, expected.detach().numpy()) <= tol
    scale = max(np.max(np.abs(P[name].grad.numpy())) for name in names)
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.dtype == dtype, name
        reference = P[name].grad.numpy()
        if training and name.endswith("/project/BatchNorm/beta"):
            # A linear bottleneck's shift only reaches 1x1 convolutions followed by batch norm
            # with batch statistics, which remove it: the exact gradient is zero.
            assert max(np.max(np.abs(param.grad)), np.max(np.abs(reference))) <= tol * scale, name
        else:
            assert _rel(param.grad, reference) <= tol, name
    buffers = dict(model.named_buffers())
    for name, value in B.items():
        assert _rel(buffers[name], value.numpy()) <= tol, name
        if not training:
            np.testing.assert_array_equal(buffers[name], state[name])

"""Single blocks (a v1 DepthSepConv layer, a v2 bottleneck row) against the torch twin, over
hypothesis-drawn channels, expansion, stride, kernel, padding mode and input size."""

import numpy as np
import torch
from hypothesis import given, strategies as st

import npmobilenet.functional as F
from npmobilenet.model import build_model
from npmobilenet.testing.strategies import inverted_residual_config, separable_config
from tests.test_model_torch import twin_forward


def one_block_spec(family, row, in_channels, padding):
    """A spec whose body is a 1x1 stem to ``in_channels`` followed by ``row``; exact widths."""
    defaults = {"min_depth": 1, "padding": padding, "batch_norm": {"eps": 1e-3, "momentum": 0.1}}
    if family == "v2":
        defaults["divisible_by"] = 1
    return {"name": f"{family}_block", "family": family,
            "defaults": defaults,
            "body": [{"type": "Conv", "kernel": [1, 1], "stride": 1, "depth": in_channels}, row],
            "head": {"pool": "global", "dropout": 0.0, "num_classes": 3}}


def check_block(spec, size, training):
    model = build_model(spec, input_size=size, dtype=np.float64, seed=0).train(training)
    rng = np.random.default_rng(1)
    state = {k: (rng.uniform(0.5, 1.5, v.shape) if k.endswith(("gamma", "moving_variance"))
                 else v + rng.normal(0, 0.1, v.shape)) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    x = rng.standard_normal((2, size, size, 3))
    cotangent = rng.standard_normal((2, 3))
    F.sum(F.mul(model(x), cotangent)).backward()

    P = {k: torch.tensor(state[k], requires_grad=True) for k, _ in model.named_parameters()}
    B = {k: torch.tensor(v) for k, v in state.items() if k not in P}
    expected = twin_forward(spec, model.graph.options.to_dict(), P, B, torch.tensor(x), training)
    (expected * torch.tensor(cotangent)).sum().backward()

    np.testing.assert_allclose(model.end_points[model.graph.output].data, expected.detach().numpy(),
                               rtol=1e-9, atol=1e-12)
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.grad, P[name].grad.numpy(), rtol=1e-7, atol=1e-10, err_msg=name)


@given(inverted_residual_config(), st.sampled_from(["SAME", "symmetric"]), st.integers(5, 11),
       st.booleans())
def test_inverted_residual_row_matches_torch(config, padding, size, training):
    row = {"type": "InvertedResidual", "t": config["expansion"], "c": config["out_channels"],
           "n": config["repeats"], "s": config["stride"]}
    check_block(one_block_spec("v2", row, config["in_channels"], padding), size, training)


@given(separable_config(), st.sampled_from(["SAME", "symmetric"]), st.integers(5, 11), st.booleans())
def test_depthwise_separable_layer_matches_torch(config, padding, size, training):
    row = {"type": "DepthSepConv", "kernel": [config["kernel"]] * 2, "stride": config["stride"],
           "depth": config["out_channels"]}
    check_block(one_block_spec("v1", row, config["in_channels"], padding), size, training)

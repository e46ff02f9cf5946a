"""The profiler covers every node with sensible figures; the benchmark runs its workloads."""

import numpy as np
import pytest

from npmobilenet import build_model
from npmobilenet.benchmark import run_workloads, torch_model
from npmobilenet.profiler import format_profile, profile_model, profile_plan


def test_profile_times_every_node_forward_and_backward():
    model = build_model("mobilenet_v2", depth_multiplier=0.35, input_size=64, num_classes=10, seed=0)
    timings = profile_model(model, batch=2, train=True, repeats=1)
    assert [t.name for t in timings] == [node.name for node in model.graph.nodes]
    assert all(t.forward_ms > 0 and t.backward_ms >= 0 for t in timings)
    assert sum(t.macs for t in timings) == 2 * sum(node.macs for node in model.graph.nodes)
    table = format_profile(timings)
    assert "expanded_conv_3/depthwise" in table and "backward ms" in table
    # Profiling leaves no gradients behind.
    assert all(p.grad is None for p in model.parameters())


def test_profile_times_every_step_of_the_inference_plan():
    model = build_model("mobilenet_v3_small", depth_multiplier=0.35, input_size=64, num_classes=10,
                        seed=0)
    timings = profile_plan(model, batch=2, repeats=1)
    assert [t.name for t in timings] == [node.name for node in model.graph.nodes]
    assert all(t.forward_ms > 0 and t.backward_ms is None for t in timings)
    assert "squeeze_excite" in format_profile(timings)


@pytest.mark.parametrize("arch, params", [("mobilenet_v2", 3_504_872), ("mobilenet_v3_large", 5_483_032),
                                          ("mobilenet_v4_conv_small", 3_774_024)])
def test_benchmark_torch_twin_has_the_same_parameter_count(arch, params):
    graph = build_model(arch, seed=0).graph
    twin = torch_model(graph)
    trainable = sum(p.numel() for p in twin.parameters())
    assert trainable == sum(node.params for node in graph.nodes) == params


def test_benchmark_runs_a_workload_for_both_frameworks():
    (row,) = run_workloads(repeats=1, workloads=[("mobilenet_v1", "inference", 1)])
    assert row["npmobilenet"] > 0 and row["torch"] > 0
    assert np.isclose(row["gflop"], 2 * 568_740_352 / 1e9)

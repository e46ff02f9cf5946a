"""The profiler covers every node with sensible figures; the benchmark runs its workloads."""

import numpy as np
import pytest

from npmobilenet import build_model
from npmobilenet import benchmark
from npmobilenet.benchmark import time_workloads, torch_model
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


def test_benchmark_times_a_workload_in_every_framework_process():
    (row,) = time_workloads([("mobilenet_v1", "inference", 2, 96)], repeats=1)
    assert set(benchmark.installed_frameworks()) == {"npmobilenet", "torch", "onnxruntime"}
    assert row["npmobilenet"] > 0 and row["torch"] > 0 and row["onnxruntime"] > 0
    macs = sum(node.macs for node in build_model("mobilenet_v1", input_size=96).graph.nodes)
    assert np.isclose(row["gflop"], 2 * 2 * macs / 1e9)


def test_benchmark_training_rows_have_no_onnxruntime_time_and_a_flop_floor():
    rows = time_workloads([("mobilenet_v2", "train step", 2, 64)], repeats=1,
                          frameworks=["npmobilenet", "onnxruntime"])
    assert rows[0]["onnxruntime"] is None and rows[0]["npmobilenet"] > 0
    lines = benchmark.format_table(rows, ["npmobilenet", "onnxruntime"], floor_gflops=100.0)
    assert lines[0].split()[-4:] == ["floor", "ms", "x", "floor"]
    floor = rows[0]["gflop"] / 100.0
    assert lines[1].split()[-2:] == [f"{1e3 * floor:.1f}", f"{rows[0]['npmobilenet'] / floor:.2f}"]


def test_workloads_another_framework_runs_below_the_flop_floor_are_named():
    rows = [{"arch": "mobilenet_v2", "kind": "inference", "batch": 8, "size": 224, "gflop": 4.8,
             "npmobilenet": 0.034, "torch": 0.057, "onnxruntime": 0.017},
            {"arch": "mobilenet_v1", "kind": "train step", "batch": 16, "size": 224, "gflop": 54.6,
             "npmobilenet": 0.397, "torch": 0.368, "onnxruntime": None}]
    assert benchmark.below_floor(rows, floor_gflops=240.0) == [
        "mobilenet_v2 inference 8x224: onnxruntime 17.0 ms < floor 20.0 ms"]


def test_a_failing_benchmark_worker_is_reported_with_its_framework():
    with benchmark.workers(["npmobilenet"]) as pool:
        with pytest.raises(RuntimeError, match="npmobilenet benchmark worker: ValueError: .*no_such_spec"):
            pool["npmobilenet"].setup(("no_such_spec", "inference", 1, 96))


def test_one_image_in_a_new_process_against_onnxruntime():
    seconds = benchmark.fresh_process_predict(repeats=1)
    assert set(seconds) == {"npmobilenet", "onnxruntime"} and all(s > 0 for s in seconds.values())


def test_scaling_lines_give_each_frameworks_images_per_second_and_our_cost_per_pixel():
    rows = [{"batch": 8, "size": 100, "npmobilenet": 0.5, "torch": 0.25}]
    header, line = benchmark.format_scaling(rows, ["npmobilenet", "torch"])
    assert "ns per image-pixel" in header
    assert line.split()[-3:] == ["16.0", "32.0", f"{1e9 * 0.5 / (8 * 100 ** 2):.2f}"]


def test_first_calls_in_a_new_worker_are_timed_without_warm_up():
    seconds = benchmark.first_calls("npmobilenet", ("mobilenet_v1", "train step", 2, 64), calls=2)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)

"""Graph expansion: names, shapes, counts and structure, checked against published figures."""

import json
import math
from pathlib import Path

import pytest

from npmobilenet.architecture import build_graph, make_divisible

DATA = Path(__file__).parents[1] / "data"


@pytest.mark.parametrize("table", ["mobilenet_v1_1.0_224", "mobilenet_v1_0.75_128"])
def test_v1_weights_and_macs_equal_tf_slim_tables(table):
    reference = json.loads((DATA / "slim_mobilenet_v1_tables.json").read_text())[table]
    graph = build_graph("mobilenet_v1", depth_multiplier=reference["depth_multiplier"],
                        input_size=reference["input_size"], num_classes=0)
    got = [(n.name, n.weights, n.macs) for n in graph.nodes]
    expected = [(row["endpoint"], row["params"], row["macs"]) for row in reference["layers"]]
    assert got == expected
    assert graph.totals()["weights"] == reference["total_params"]
    assert graph.totals()["macs"] == reference["total_macs"]


def test_published_totals():
    # Keras MobileNet (1.0, 224, 1000 classes) trainable parameters; torchvision mobilenet_v2.
    assert build_graph("mobilenet_v1").totals()["params"] == 4_231_976
    v2 = build_graph("mobilenet_v2").totals()
    assert v2["params"] == 3_504_872
    assert 295e6 < v2["macs"] < 306e6  # "300M MACs" (paper, Table 3)


def test_v1_names_follow_tf_slim_endpoints():
    names = [n.name for n in build_graph("mobilenet_v1").nodes]
    expected = ["Conv2d_0"] + [f"Conv2d_{i}_{part}" for i in range(1, 14)
                               for part in ("depthwise", "pointwise")]
    assert names == expected + ["AvgPool_1a", "Dropout_1b", "Logits"]


def test_v2_names_parameters_and_residual_edges():
    graph = build_graph("mobilenet_v2")
    shapes = graph.parameter_shapes()
    assert shapes["Conv/weights"] == (3, 3, 3, 32)
    assert shapes["expanded_conv/depthwise/weights"] == (3, 3, 32, 1)
    assert "expanded_conv/expand/weights" not in shapes  # t = 1: no expansion
    assert shapes["expanded_conv_1/expand/weights"] == (1, 1, 16, 96)
    assert shapes["expanded_conv_16/project/weights"] == (1, 1, 960, 320)
    assert shapes["Conv_1/weights"] == (1, 1, 320, 1280)
    assert shapes["Logits/weights"] == (1280, 1000) and shapes["Logits/biases"] == (1000,)
    assert graph.buffer_shapes()["Conv_1/BatchNorm/moving_variance"] == (1280,)
    adds = [n for n in graph.nodes if n.op == "add"]
    # Stride 1 and equal channels: every repeat after the first of its row (row 96: not its first).
    assert [n.name for n in adds] == [f"expanded_conv_{k}/add" for k in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)]
    previous = {n.name: graph.nodes[i - 1].name for i, n in enumerate(graph.nodes)}
    for add in adds:
        block = add.name.split("/")[0]
        assert add.inputs[0] == f"{block}/project"
        assert add.inputs[1] == previous[f"{block}/expand"]  # the block's input
    assert graph.node("expanded_conv_16/project").attrs["activation"] is None  # linear bottleneck


def test_make_divisible_rounds_to_nearest_and_keeps_90_percent():
    assert make_divisible(32 * 0.35, 8, 8) == 16
    assert make_divisible(16 * 0.35, 8, 8) == 8
    assert make_divisible(96 * 0.35, 8, 8) == 32
    assert make_divisible(11, 8, 8) == 16  # 8 would lose more than 10%
    assert make_divisible(1280 * 1.4, 8, 8) == 1792


@pytest.mark.parametrize("alpha, widths", [
    (0.35, [16, 8, 8, 16, 24, 32, 56, 112, 1280]),
    (0.5, [16, 8, 16, 16, 32, 48, 80, 160, 1280]),
    (1.4, [48, 24, 32, 48, 88, 136, 224, 448, 1792]),
])
def test_v2_widths(alpha, widths):
    graph = build_graph("mobilenet_v2", depth_multiplier=alpha)
    names = ["Conv"] + [f"expanded_conv{s}/project" for s in ("", "_2", "_5", "_9", "_12", "_15", "_16")]
    got = [graph.node(name).out_shape[2] for name in names + ["Conv_1"]]
    assert got == widths


def test_v1_min_depth():
    graph = build_graph("mobilenet_v1", depth_multiplier=0.1, min_depth=8, num_classes=0)
    assert graph.node("Conv2d_0").out_shape[2] == 8  # int(3.2) -> 3, raised to min_depth
    assert graph.node("Conv2d_13_pointwise").out_shape[2] == 102


@pytest.mark.parametrize("spec", ["mobilenet_v1", "mobilenet_v2"])
@pytest.mark.parametrize("size, final", [(224, 7), (192, 6), (160, 5), (128, 4), (96, 3), (225, 8), (97, 4)])
def test_final_feature_size(spec, size, final):
    graph = build_graph(spec, input_size=size, num_classes=0)
    assert graph.nodes[-1].out_shape[:2] == (final, final)


@pytest.mark.parametrize("spec", ["mobilenet_v1", "mobilenet_v2"])
@pytest.mark.parametrize("output_stride, final", [(8, 28), (16, 14), (32, 7)])
def test_output_stride(spec, output_stride, final):
    graph = build_graph(spec, output_stride=output_stride, num_classes=0)
    assert graph.nodes[-1].out_shape[:2] == (final, final)
    strides = math.prod(n.attrs["stride"] for n in graph.nodes if "stride" in n.attrs)
    assert strides == output_stride


def test_output_stride_turns_strides_into_dilation_like_slim():
    graph = build_graph("mobilenet_v1", output_stride=16, num_classes=0)
    assert (graph.node("Conv2d_12_depthwise").attrs["stride"], graph.node("Conv2d_12_depthwise").attrs["dilation"]) == (1, 1)
    assert (graph.node("Conv2d_13_depthwise").attrs["stride"], graph.node("Conv2d_13_depthwise").attrs["dilation"]) == (1, 2)
    graph = build_graph("mobilenet_v1", output_stride=8, num_classes=0, padding="symmetric")
    dilations = [graph.node(f"Conv2d_{i}_depthwise").attrs["dilation"] for i in range(6, 14)]
    assert dilations == [1, 2, 2, 2, 2, 2, 2, 4]
    assert graph.node("Conv2d_13_depthwise").attrs["padding"] == 4  # k // 2 * dilation


def test_head_options():
    slim = build_graph("mobilenet_v1", input_size=160)
    assert slim.node("AvgPool_1a").attrs == {"mode": "slim", "kernel": [5, 5], "stride": 2}
    assert slim.node("Dropout_1b").attrs == {"rate": 0.001}
    glob = build_graph("mobilenet_v1", input_size=320, global_pool=True, dropout=0.0)
    assert [n.name for n in glob.nodes[-2:]] == ["AvgPool_1a", "Logits"]
    assert glob.node("AvgPool_1a").attrs == {"mode": "global"}
    headless = build_graph("mobilenet_v2", num_classes=0)
    assert headless.output == "Conv_1"


def test_final_endpoint_truncates():
    graph = build_graph("mobilenet_v1", final_endpoint="Conv2d_5_pointwise")
    assert graph.output == "Conv2d_5_pointwise" and len(graph.nodes) == 11
    graph = build_graph("mobilenet_v1", final_endpoint="AvgPool_1a")
    assert graph.output == "AvgPool_1a" and graph.nodes[-1].out_shape == (1024,)
    assert build_graph("mobilenet_v2", final_endpoint="expanded_conv_2/add").output == "expanded_conv_2/add"


def test_padding_attrs():
    same = build_graph("mobilenet_v2", padding="SAME")
    sym = build_graph("mobilenet_v2")
    assert same.node("Conv").attrs["padding"] == "SAME"
    assert sym.node("Conv").attrs["padding"] == 1 and sym.node("Conv_1").attrs["padding"] == 0


def test_rectangular_input():
    graph = build_graph("mobilenet_v2", input_size=[224, 160], num_classes=0)
    assert graph.nodes[-1].out_shape == (7, 5, 1280)


def test_graph_exports():
    graph = build_graph("mobilenet_v2", depth_multiplier=0.5, input_size=128)
    data = json.loads(json.dumps(graph.to_dict()))
    assert [n["name"] for n in data["nodes"]] == [n.name for n in graph.nodes]
    assert data["options"]["depth_multiplier"] == 0.5 and data["input_shape"] == [128, 128, 3]
    assert data["nodes"][0]["parameters"]["weights"] == [3, 3, 3, 16]
    assert data["total"] == graph.totals()
    dot = graph.to_dot()
    assert dot.startswith('digraph "mobilenet_v2"')
    assert '"expanded_conv_1/project" -> "expanded_conv_2/add";' in dot  # the residual edge
    assert dot.count(" -> ") == sum(len(n.inputs) for n in graph.nodes)
    table = graph.summary()
    total = next(line for line in table.splitlines() if line.startswith("Total"))
    assert "Conv_1" in table and f"{graph.totals()['macs']:,}" in total


def test_keras_padding_differs_from_same_only_on_odd_sizes():
    # Keras v1 pads (0, 1) before stride-2 depthwise convs: 17 -> 8 where SAME gives 9.
    keras = build_graph("mobilenet_v1", input_size=67, padding="keras").node("Conv2d_4_depthwise")
    same = build_graph("mobilenet_v1", input_size=67, padding="SAME").node("Conv2d_4_depthwise")
    assert keras.attrs["padding"] == [[0, 1], [0, 1]] and keras.out_shape[:2] == (8, 8)
    assert same.out_shape[:2] == (9, 9)
    even = [n.out_shape for n in build_graph("mobilenet_v1", input_size=64, padding="keras").nodes]
    assert even == [n.out_shape for n in build_graph("mobilenet_v1", input_size=64, padding="SAME").nodes]

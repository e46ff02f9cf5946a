"""npmobilenet.trace(): every op forward and backward recorded once, with its graph node, shapes,
dtype and bytes; the table, JSON and DOT exports; plan steps; ``--trace FILE`` on the CLI."""

import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

import npmobilenet as nm
from npmobilenet import functional as F
from npmobilenet import tracing
from npmobilenet.cli import main
from npmobilenet.ops import REGISTRY
from npmobilenet.ops.registry import Op

FIELDS = {"id", "op", "phase", "node", "inputs", "output", "dtype", "bytes", "seconds", "sources"}


@pytest.fixture
def counted_ops(monkeypatch):
    """Every registered op's forward and vjp wrapped to count its calls, independently of the trace."""
    calls = Counter()

    def counting(name, phase, function):
        def run(*args, **kwargs):
            calls[name, phase] += 1
            return function(*args, **kwargs)
        return run

    for name, op in list(REGISTRY.items()):
        monkeypatch.setitem(REGISTRY, name, Op(name, op.input_names, counting(name, "forward", op.forward),
                                               op.vjp and counting(name, "backward", op.vjp)))
    return calls


def test_a_v2_training_step_lists_every_op_once(counted_ops):
    model = nm.build_model("mobilenet_v2", depth_multiplier=0.35, input_size=32, num_classes=4, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    with nm.trace() as t:
        F.cross_entropy(model(x), np.array([1, 3])).backward()
    assert tracing.ACTIVE is None

    records = t.records
    assert Counter((r["op"], r["phase"]) for r in records) == counted_ops
    assert [r["id"] for r in records] == list(range(len(records)))
    forward = [r for r in records if r["phase"] == "forward"]
    backward = [r for r in records if r["phase"] == "backward"]
    # Every forward op of a training step feeds the loss: each has exactly one backward record.
    assert sorted(r["forward"] for r in backward) == [r["id"] for r in forward]
    for r in backward:
        twin = records[r["forward"]]
        assert (r["op"], r["node"], r["inputs"], r["output"]) == (twin["op"], twin["node"], twin["inputs"], twin["output"])
    assert {r["node"] for r in forward} == {n.name for n in model.graph.nodes} | {None}
    assert [r["op"] for r in forward if r["node"] == "expanded_conv_2/depthwise"] == ["depthwise_batch_norm"]
    for r in records:
        assert FIELDS <= set(r) and r["dtype"] == "float32" and r["seconds"] >= 0
    for r in forward:
        assert r["bytes"] == 4 * int(np.prod(r["output"]))
    first = forward[0]
    assert (first["op"], first["node"], first["inputs"], first["output"]) == (
        "conv2d", "Conv", [[2, 32, 32, 3], [3, 3, 3, 16]], [2, 16, 16, 16])

    dot = t.to_dot()
    assert dot.startswith("digraph trace {") and dot.endswith("}\n")
    assert len(re.findall(r"(?m)^  r\d+ \[label=", dot)) == len(records)  # one DOT node per record
    assert len(re.findall(r"(?m)^  r\d+ -> r\d+;$", dot)) == sum(len(r["sources"]) for r in records)
    assert json.loads(t.to_json()) == records


def test_record_fields_and_edges(capsys):
    a = nm.Tensor(np.ones((2, 3)), requires_grad=True)
    b = nm.Tensor(np.full(3, 2.0))
    with nm.trace() as t:
        y = (a * b - 1).sum()
        y.backward()
    mul, sub, total, d_sum, d_sub, d_mul = t.records
    assert [(r["op"], r["phase"]) for r in t.records] == [
        ("mul", "forward"), ("sub", "forward"), ("sum", "forward"),
        ("sum", "backward"), ("sub", "backward"), ("mul", "backward")]
    assert mul["inputs"] == [[2, 3], [3]] and mul["output"] == [2, 3] and mul["sources"] == []
    assert sub["sources"] == [0] and total["sources"] == [1] and total["output"] == []
    assert d_sum["sources"] == [2] and d_sub["sources"] == [1, 3] and d_mul["sources"] == [0, 4]
    assert d_mul["bytes"] == 8 * 6  # the gradient of a alone: b needs none
    assert all(r["node"] is None and r["dtype"] == "float64" for r in t.records)

    text = t.table()
    assert capsys.readouterr().out == text + "\n"
    lines = text.splitlines()
    assert lines[0].split() == ["#", "phase", "op", "node", "inputs", "output", "dtype", "bytes", "ms"]
    assert lines[1].split()[:6] == ["0", "forward", "mul", "2x3", "3", "2x3"]
    assert lines[-1].startswith("forward: 3 records") and "backward: 3 records" in lines[-1]


def test_an_input_used_twice_is_one_source():
    a = nm.Tensor(np.ones(3), requires_grad=True)
    with nm.trace() as t:
        u = a * 2
        (u * u).sum().backward()
    assert [r["sources"] for r in t.records] == [[], [0], [1], [2], [1, 3], [0, 4]]
    assert t.to_dot().count("r0 -> r1;") == 1


def test_nothing_is_recorded_outside_or_after_a_trace():
    with nm.trace() as outer:
        F.relu(np.ones(2, np.float32))
        with nm.trace() as inner:
            F.relu6(np.ones(2, np.float32))
        F.relu(np.ones(2, np.float32))
    F.relu(np.ones(2, np.float32))
    assert [r["op"] for r in outer.records] == ["relu", "relu"]
    assert [r["op"] for r in inner.records] == ["relu6"]
    assert tracing.ACTIVE is None


def test_the_inference_plan_records_its_steps():
    model = nm.build_model("mobilenet_v3_small", depth_multiplier=0.35, input_size=32, num_classes=3,
                           seed=0).eval()
    x = np.zeros((1, 32, 32, 3), np.float32)
    with nm.no_grad(), nm.trace() as t:
        model(x)
    steps = [r for r in t.records if r["op"].startswith("plan.")]
    assert [r["node"] for r in steps] == [n.name for n in model.graph.nodes]
    assert {r["op"] for r in steps} >= {"plan.conv", "plan.depthwise", "plan.squeeze_excite", "plan.linear"}
    by_node = {r["node"]: r for r in steps}
    for node in model.graph.nodes:
        assert by_node[node.name]["output"] == [1, *node.out_shape]
        assert [by_node[name]["id"] for name in node.inputs if name != "input"] == by_node[node.name]["sources"]


def test_train_and_predict_write_their_trace(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run), "--epochs", "1",
                 "--spec", "mobilenet_v1", "--depth-multiplier", "0.25", "--input-size", "32",
                 "--batch-size", "4", "--quiet", "--export-samples", "0", "--workers", "1",
                 "--trace", str(tmp_path / "train.json")]) == 0
    records = json.loads((tmp_path / "train.json").read_text())
    phases = Counter((r["op"], r["phase"]) for r in records)
    assert phases["depthwise_batch_norm", "forward"] >= 13 and phases["depthwise_batch_norm", "backward"] >= 13
    assert {r["node"] for r in records} >= {"Conv2d_0", "Conv2d_13_pointwise", "Logits"}

    image = str(tmp_path / "data" / "cat" / "0.png")
    assert main(["predict", "--weights", str(run / "best.safetensors"), image, "--trace",
                 str(tmp_path / "predict.dot")]) == 0
    dot = (tmp_path / "predict.dot").read_text()
    assert dot.startswith("digraph trace {") and '"plan.depthwise forward\\nConv2d_13_depthwise' in dot
    assert main(["predict", "--weights", str(run / "best.safetensors"), image, "--trace",
                 str(tmp_path / "predict.txt")]) == 0
    assert (tmp_path / "predict.txt").read_text().splitlines()[0].split()[:3] == ["#", "phase", "op"]

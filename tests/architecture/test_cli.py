"""``npmobilenet summary`` and ``npmobilenet graph``."""

import json
from pathlib import Path

import pytest

from npmobilenet.cli import main

DATA = Path(__file__).parents[1] / "data"


def test_summary_json_matches_tf_slim_table(capsys):
    reference = json.loads((DATA / "slim_mobilenet_v1_tables.json").read_text())["mobilenet_v1_0.75_128"]
    assert main(["summary", "mobilenet_v1", "--depth-multiplier", "0.75", "--input-size", "128",
                 "--num-classes", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"layers", "total"}
    assert [(r["name"], r["weights"], r["macs"]) for r in out["layers"]] == [
        (r["endpoint"], r["params"], r["macs"]) for r in reference["layers"]]
    assert set(out["layers"][0]) == {"name", "op", "output_shape", "weights", "params", "trainable",
                                     "frozen", "buffers", "param_bytes", "activation_bytes", "macs"}
    assert out["layers"][0]["output_shape"] == [64, 64, 24]
    assert out["layers"][0]["params"] == 648 + 2 * 24  # kernel + batch-norm gamma and beta
    assert out["total"]["weights"] == 1_800_144 and out["total"]["macs"] == 106_002_432


def test_summary_table_with_head(capsys):
    assert main(["summary", "mobilenet_v2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Layer", "op", "output", "shape", "weights", "params", "frozen",
                                "param", "mem", "act", "mem", "MACs"]
    total = next(line for line in lines if line.startswith("Total")).split()
    assert total[:4] + total[-1:] == ["Total", "3,469,760", "3,504,872", "0", "300,774,272"]
    assert any(line.split()[:3] == ["Logits", "linear", "1000"] for line in lines)


def test_summary_user_spec_file(capsys):
    assert main(["summary", str(Path(__file__).parent / "cifar10_mobilenet_v1.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layers"][-1] == {"name": "Logits", "op": "linear", "output_shape": [10],
                                 "weights": 10_240, "params": 10_250, "trainable": 10_250, "frozen": 0,
                                 "buffers": 0, "param_bytes": 41_000, "activation_bytes": 40,
                                 "macs": 10_240}


def test_graph_formats(capsys):
    assert main(["graph", "mobilenet_v2", "--format", "json", "--input-size", "96"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["nodes"][-1]["name"] == "Logits" and data["input_shape"] == [96, 96, 3]
    assert main(["graph", "mobilenet_v1", "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert '"Conv2d_13_pointwise" -> "AvgPool_1a";' in dot


def test_bad_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", "mobilenet_v1", "--depth-multiplier", "-1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("npmobilenet summary: error: argument --depth-multiplier: "
                                    "expected a number in (0, 64.0], got -1.0")


def test_bad_input_is_one_clean_line(capsys):
    assert main(["graph", "nosuchspec"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("npmobilenet: error: unknown spec 'nosuchspec'") and err.count("\n") == 1

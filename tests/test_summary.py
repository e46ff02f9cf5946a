"""Summaries: trainable vs frozen parameters, parameter bytes and activation memory per layer,
from Model.summary() and from ``npmobilenet summary`` on a spec or a model file."""

import json

import numpy as np
import pytest

import npmobilenet as nm
from npmobilenet.cli import main


def _rows(table: str) -> dict:
    return {line.split()[0]: line.split() for line in table.splitlines()[2:] if line and line[0] != "-"}


def test_model_summary_prints_and_returns_the_table(capsys):
    model = nm.build_model("mobilenet_v1", depth_multiplier=0.25, input_size=64, num_classes=5,
                           dtype=np.float64, seed=0).freeze(trainable=("Logits",))
    text = model.summary()
    assert capsys.readouterr().out == text + "\n"
    rows = _rows(text)
    assert rows["Logits"][4:6] == ["1,285", "0"]  # params, frozen: the head trains
    assert rows["Conv2d_0"][4:6] == ["232", "232"]  # 3x3x3x8 kernel + gamma + beta, all frozen
    frozen = sum(p.data.size for p in model.parameters() if not p.requires_grad)
    assert f"Trainable parameters: 1,285; frozen: {frozen:,};" in text
    assert "(float64, moving statistics included)" in text

    summary = model.graph.summary_dict({n for n, p in model.named_parameters() if not p.requires_grad},
                                       np.float64)
    conv = summary["layers"][0]
    assert conv["param_bytes"] == 8 * (232 + 16) and conv["activation_bytes"] == 8 * 32 * 32 * 8
    assert summary["total"]["trainable"] + summary["total"]["frozen"] == summary["total"]["params"]
    assert summary["total"]["activation_bytes"] == sum(8 * int(np.prod(n.out_shape)) for n in model.graph.nodes)


def test_summary_of_a_model_file(tmp_path, capsys):
    model = nm.build_model("mobilenet_v2", depth_multiplier=0.35, input_size=64, num_classes=3, seed=0)
    path = tmp_path / "model.safetensors"
    nm.save(model, path)
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "every parameter is shown trainable" in out
    assert f"Trainable parameters: {model.num_parameters():,}; frozen: 0;" in out

    # A checkpoint records its frozen layers in its training settings.
    frozen = [n.name for n in model.graph.nodes if n.name != "Logits"]
    checkpoint = tmp_path / "last.safetensors"
    nm.save(model, checkpoint, training_state=({}, {"settings": {"frozen": frozen}}))
    assert main(["summary", str(checkpoint), "--json"]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert total["trainable"] == 1280 * 3 + 3 and total["frozen"] == model.num_parameters() - total["trainable"]
    assert total["dtype"] == "float32"
    assert main(["summary", str(checkpoint)]) == 0
    assert "frozen layers as the checkpoint's training settings record them" in capsys.readouterr().out


def test_model_file_options_are_its_own(tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    nm.save(nm.build_model("mobilenet_v1", depth_multiplier=0.25, input_size=32, num_classes=2), path)
    assert main(["summary", str(path), "--input-size", "64"]) == 1
    assert capsys.readouterr().err.strip().endswith("a model file holds its own build options; drop --input-size")


@pytest.mark.parametrize("spec", ["mobilenet_v1", "mobilenet_v3_small"])
def test_spec_summary_memory_is_float32(spec, capsys):
    assert main(["summary", spec, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total"]["dtype"] == "float32" and out["total"]["frozen"] == 0
    assert all(row["activation_bytes"] == 4 * int(np.prod(row["output_shape"])) for row in out["layers"])
    assert out["total"]["param_bytes"] == 4 * (out["total"]["params"] + out["total"]["buffers"])

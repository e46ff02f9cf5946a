"""ONNX export: every built-in architecture runs in onnxruntime within 1e-4 of npmobilenet, at
batch 1 and 8, an odd input size and both layouts; the graph passes onnx.checker's full check
and carries its class names and preprocessing; the CLI writes it."""

import json
import subprocess
import sys

import numpy as np
import pytest

import npmobilenet as nm
from npmobilenet.export.onnx import OPSET, to_onnx
from npmobilenet.io import preset, save

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SIZE = (67, 45)
SPECS = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
         "mobilenet_v4_conv_small"]
_models = {}


def _model(spec, **options):
    """A small model whose batch norms were calibrated on a batch (momentum 1 keeps its
    statistics), then given random affine parameters, biases and shifted statistics: its
    logits depend on the input, and a wrongly folded batch norm shows."""
    key = (spec, tuple(sorted(options.items())))
    if key not in _models:
        model = nm.build_model(spec, depth_multiplier=0.35, input_size=SIZE, seed=0, bn_momentum=1.0,
                               **{"num_classes": 7, **options})
        rng = np.random.default_rng(1)
        with nm.no_grad():
            model.train()(rng.normal(0, 1, (8, *SIZE, 3)).astype(np.float32))
        state = model.state_dict()
        for name, value in state.items():
            if name.endswith("moving_variance") or name.endswith("gamma"):
                state[name] = (value * rng.uniform(0.7, 1.3, value.shape)).astype(value.dtype)
            elif name.endswith(("moving_mean", "beta", "biases")):
                state[name] = (value + rng.normal(0, 0.1, value.shape)).astype(value.dtype)
        model.load_state_dict(state)
        model.class_names = [f"kind {i}" for i in range(model.graph.options.num_classes)] or None
        model.preprocess = preset("torchvision")
        _models[key] = model.eval()
    return _models[key]


def _session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("spec", SPECS)
def test_exported_graphs_match_npmobilenet(spec, layout):
    model = _model(spec)
    proto = to_onnx(model, layout)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == OPSET >= 13
    session = _session(proto)
    rng = np.random.default_rng(2)
    for batch in (1, 8):
        x = rng.normal(0, 1, (batch, *SIZE, 3)).astype(np.float32)
        expected = model(x).data
        fed = x if layout == "nhwc" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        logits, = session.run(None, {"input": fed})
        assert logits.shape == (batch, 7)
        assert np.abs(logits - expected).max() / np.abs(expected).max() < 1e-4
    assert np.abs(expected[0] - expected[1]).max() > 1e-2 * np.abs(expected).max()


def test_metadata_dynamic_batch_and_headless_outputs():
    model = _model("mobilenet_v2")
    proto = to_onnx(model, "nhwc")
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["classes"] == [f"kind {i}" for i in range(7)]
    assert props["preprocess"] == preset("torchvision") and props["layout"] == "nhwc"
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [*SIZE, 3]
    x = np.random.default_rng(3).normal(0, 1, (2, *SIZE, 3)).astype(np.float32)
    for options, expected_shape in (({"num_classes": 0, "pool_features": True}, (2, 1280)),
                                    ({"num_classes": 0}, (2, 3, 2, 1280))):
        headless = _model("mobilenet_v2", **options)
        features, = _session(to_onnx(headless, "nhwc")).run(None, {"input": x})
        assert features.shape == expected_shape
        expected = headless(x).data
        assert np.abs(features - expected).max() / np.abs(expected).max() < 1e-4


def test_a_kind_without_an_exporter_is_named():
    model = _model("mobilenet_v1")
    from dataclasses import replace

    from npmobilenet.kinds import KINDS

    original = KINDS["add"]
    KINDS["add"] = replace(original, onnx=None)
    try:
        with pytest.raises(ValueError, match="node kind 'add' has no ONNX exporter"):
            to_onnx(_model("mobilenet_v2"))
    finally:
        KINDS["add"] = original
    assert to_onnx(model) is not None


def test_the_export_command(tmp_path):
    model = _model("mobilenet_v3_small")
    save(model, tmp_path / "m.safetensors")
    command = [sys.executable, "-c", "import sys; from npmobilenet.cli import main; sys.exit(main())"]
    result = subprocess.run([*command, "export", str(tmp_path / "m.safetensors"), str(tmp_path / "m.onnx"),
                             "--layout", "nhwc", "--input-size", "96", "80"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "input NHWC of 96x80, dynamic batch" in result.stdout
    x = np.random.default_rng(4).normal(0, 1, (3, 96, 80, 3)).astype(np.float32)
    logits, = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    expected = model(x).data
    assert np.abs(logits - expected).max() / np.abs(expected).max() < 1e-4


def test_without_onnx_the_command_says_what_to_install(tmp_path):
    save(_model("mobilenet_v1"), tmp_path / "m.safetensors")
    script = ("import sys; sys.modules['onnx'] = None; from npmobilenet.cli import main; "
              f"sys.exit(main(['export', {str(tmp_path / 'm.safetensors')!r}, {str(tmp_path / 'm.onnx')!r}]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip() == ("npmobilenet: error: ONNX export needs the onnx package: "
                                     "pip install 'npmobilenet[onnx]'")
    assert not (tmp_path / "m.onnx").exists()

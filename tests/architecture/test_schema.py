"""Spec and option validation: every error names the JSON path or option and the bad value."""

import copy
import json
import re

import pytest

from npmobilenet.architecture import build_graph, load_spec


@pytest.fixture(scope="module")
def v1():
    return load_spec("mobilenet_v1")


def _with(spec, edit):
    spec = copy.deepcopy(spec)
    edit(spec)
    return spec


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["body"][3].update(stride="2"), 'body[3].stride: expected an integer, got "2"'),
    (lambda s: s["body"][2].update(depth=-64), "body[2].depth: expected an integer in [1, 65536], got -64"),
    (lambda s: s["body"][1].update(type="Pool"),
     'body[1].type: expected one of "Conv", "DepthSepConv" in a v1 spec, got "Pool"'),
    (lambda s: s["body"][1].update(type="InvertedResidual"),
     'body[1].type: expected one of "Conv", "DepthSepConv" in a v1 spec, got "InvertedResidual"'),
    (lambda s: s["body"][0].update(kernel=[3, 0]),
     "body[0].kernel: expected an integer in [1, 31] or [height, width] of them, got [3, 0]"),
    (lambda s: s["body"][4].pop("depth"), "body[4].depth: required field is missing"),
    (lambda s: s["body"][4].update(depht=3), "body[4].depht: unknown field"),
    (lambda s: s.update(body=[]), "body: expected a non-empty list of layers, got []"),
    (lambda s: s.update(family="v9"), 'family: expected one of "v1", "v2", "v3", "v4", got "v9"'),
    (lambda s: s["defaults"].update(padding="same"),
     'defaults.padding: expected one of "SAME", "symmetric", "keras", got "same"'),
    (lambda s: s["defaults"]["batch_norm"].update(eps=0), "defaults.batch_norm.eps: expected a number in (0, 1], got 0"),
    (lambda s: s["defaults"].update(divisible_by=8), "defaults.divisible_by: unknown field"),
    (lambda s: s["head"].update(dropout=1.0), "head.dropout: expected a number in [0, 1), got 1.0"),
    (lambda s: s["head"].update(num_classes=True), "head.num_classes: expected an integer, got true"),
    (lambda s: s.pop("name"), "name: required field is missing"),
])
def test_bad_spec_names_path_and_value(v1, edit, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_spec(_with(v1, edit))


def test_v2_rows_are_checked_by_their_own_fields():
    v2 = load_spec("mobilenet_v2")
    with pytest.raises(ValueError, match=re.escape("body[3].n: expected an integer in [1, 256], got 0")):
        load_spec(_with(v2, lambda s: s["body"][3].update(n=0)))
    with pytest.raises(ValueError, match=re.escape(
            'body[2].type: expected one of "Conv", "InvertedResidual" in a v2 spec, got "DepthSepConv"')):
        load_spec(_with(v2, lambda s: s["body"].__setitem__(2, {"type": "DepthSepConv", "kernel": 3,
                                                                  "stride": 1, "depth": 8})))


@pytest.mark.parametrize("options, message", [
    ({"depth_multiplier": 0}, "depth_multiplier: expected a number in (0, 64.0], got 0"),
    ({"depth_multiplier": -0.5}, "depth_multiplier: expected a number in (0, 64.0], got -0.5"),
    ({"output_stride": 4}, "output_stride: expected one of 8, 16, 32, got 4"),
    ({"input_size": 16}, "input_size: 16x16 is smaller than the network's total stride 32"),
    ({"input_size": 0}, "input_size: expected an integer in [1, 8192] or [height, width]"),
    ({"final_endpoint": "Conv2d_99_pointwise"}, "final_endpoint: unknown endpoint 'Conv2d_99_pointwise'"),
    ({"padding": "reflect"}, 'padding: expected one of "SAME", "symmetric", "keras", got "reflect"'),
    ({"activation": "gelu"}, 'activation: expected one of "identity", "relu", "relu6", "hard_swish", got "gelu"'),
    ({"min_depth": 0}, "min_depth: expected an integer in [1, 65536], got 0"),
    ({"num_classes": -1}, "num_classes: expected an integer in [0, 100000], got -1"),
    ({"divisible_by": 8}, "divisible_by: does not apply to v1 specs"),
    ({"width": 2}, "unknown option 'width'"),
    ({"input_size": 320}, "global_pool: slim's 7x7 average pool leaves a 2x2 map"),
])
def test_bad_options_name_option_and_value(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_graph("mobilenet_v1", **options)


def test_load_spec_by_name_path_and_dict(tmp_path):
    by_name = load_spec("mobilenet_v2")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(by_name))
    assert load_spec(path) == by_name
    assert load_spec(str(path)) == by_name
    assert load_spec(by_name) == by_name and load_spec(by_name) is not by_name


def test_load_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown spec 'mobilenet_v9'.*mobilenet_v1, mobilenet_v2"):
        load_spec("mobilenet_v9")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_spec(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_spec(bad)


def test_top_level_specs_folder_holds_the_packaged_specs():
    from pathlib import Path

    root = Path(__file__).parents[2]
    for name in ("mobilenet_v1", "mobilenet_v2"):
        assert json.loads((root / "specs" / f"{name}.json").read_text()) == load_spec(name)

"""``npmobilenet summary SPEC|MODEL``: per-layer output shapes, weights, parameters (trainable
and frozen), parameter and activation memory, and MACs."""

from __future__ import annotations

import json
import os

import numpy as np

from ..architecture import build_graph
from ..validate import LIMITS
from .arguments import integer, number

BUILD_OPTIONS = ("depth_multiplier", "input_size", "num_classes", "output_stride", "global_pool")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "summary", help="per-layer table of output shapes, parameters, memory and MACs",
        description="Expand SPEC (a built-in name such as mobilenet_v1, or a JSON file) or read a "
                    "model file (.safetensors) and print each layer's output shape, kernel "
                    "weights, parameters (and how many are frozen), parameter and activation "
                    "memory (float32 for a spec, the file's dtype for a model file) and MACs, "
                    "with totals. Computed from shapes alone, no data is run. A model file "
                    "records which layers were frozen only in a training checkpoint; otherwise "
                    "every parameter is shown trainable.")
    add_spec_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help='print {"layers": [...], "total": {...}} as JSON instead of a table')
    parser.set_defaults(func=run)


def add_spec_arguments(parser) -> None:
    """SPEC and the build options shared by ``summary`` and ``graph``."""
    parser.add_argument("spec", metavar="SPEC",
                        help="built-in spec name or path to a spec JSON file (summary also takes "
                             "a model file)")
    parser.add_argument("--depth-multiplier", type=number(0, LIMITS["multiplier"], low_open=True),
                        metavar="A", help="width multiplier alpha")
    parser.add_argument("--input-size", type=integer(1, LIMITS["image_side"]), metavar="N",
                        help="input height and width")
    parser.add_argument("--num-classes", type=integer(0, LIMITS["classes"]), metavar="K",
                        help="classes (0: no head)")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32), help="atrous output stride")
    parser.add_argument("--global-pool", action="store_true", default=None,
                        help="global average pool instead of slim's fixed 7x7 pool")


def graph_from_args(args):
    return build_graph(args.spec, depth_multiplier=args.depth_multiplier,
                       input_size=args.input_size, num_classes=args.num_classes,
                       output_stride=args.output_stride, global_pool=args.global_pool)


def is_model_file(path: str) -> bool:
    """Whether ``path`` is a safetensors file: an 8-byte little-endian header length, then the
    JSON header's ``{`` (a spec file starts with ``{`` or blank space instead)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:] == b"{" and 8 + int.from_bytes(head[:8], "little") <= os.path.getsize(path)


def _model_file_summary(args, json_output: bool) -> str:
    from ..io import load
    from ..io.model_file import load_training_state

    given = [f"--{name.replace('_', '-')}" for name in BUILD_OPTIONS if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{args.spec}: a model file holds its own build options; drop {', '.join(given)}")
    model = load(args.spec)
    try:
        settings = load_training_state(args.spec)[1].get("settings") or {}
    except ValueError:  # not a checkpoint: no training state, no frozen layers recorded
        settings = {}
    recorded = settings.get("frozen", ())
    frozen_nodes = [node for node in model.graph.nodes if node.name in recorded]
    frozen = {f"{node.name}/{key}" for node in frozen_nodes for key in node.param_shapes}
    if json_output:
        return json.dumps(model.graph.summary_dict(frozen, model.dtype), indent=1)
    source = (f"frozen layers as the checkpoint's training settings record them ({len(frozen_nodes)})"
              if "frozen" in settings else "the file records no frozen layers: every parameter is "
              "shown trainable")
    return f"{model.graph.summary(frozen, model.dtype)}\n{args.spec}: {source}"


def run(args) -> int:
    if os.path.isfile(args.spec) and is_model_file(args.spec):
        print(_model_file_summary(args, args.json))
        return 0
    graph = graph_from_args(args)
    print(json.dumps(graph.summary_dict(dtype=np.float32), indent=1) if args.json else graph.summary())
    return 0

"""``npmobilenet summary SPEC``: per-layer output shapes, weights, parameters and MACs."""

from __future__ import annotations

import json

from ..architecture import build_graph
from ..validate import LIMITS
from .arguments import integer, number


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "summary", help="per-layer table of output shapes, weights, parameters and MACs",
        description="Expand SPEC (a built-in name such as mobilenet_v1, or a JSON file) and print "
                    "each layer's output shape, kernel weights, trainable parameters and MACs, "
                    "with totals. Computed from shapes alone, no data is run.")
    add_spec_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help='print {"layers": [...], "total": {...}} as JSON instead of a table')
    parser.set_defaults(func=run)


def add_spec_arguments(parser) -> None:
    """SPEC and the build options shared by ``summary`` and ``graph``."""
    parser.add_argument("spec", metavar="SPEC", help="built-in spec name or path to a spec JSON file")
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


def run(args) -> int:
    graph = graph_from_args(args)
    print(json.dumps(graph.summary_dict(), indent=1) if args.json else graph.summary())
    return 0

"""``npmobilenet graph SPEC --format dot|json``: export the expanded graph."""

from __future__ import annotations

import json

from .summary import add_spec_arguments, graph_from_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "graph", help="export the expanded graph as Graphviz DOT or JSON",
        description="Expand SPEC and print its graph: nodes with op, attrs, inputs, output "
                    "shape, parameter shapes, weights, params and MACs (json), or a DOT digraph.")
    add_spec_arguments(parser)
    parser.add_argument("--format", choices=("dot", "json"), default="json", help="output format")
    parser.set_defaults(func=run)


def run(args) -> int:
    graph = graph_from_args(args)
    print(graph.to_dot() if args.format == "dot" else json.dumps(graph.to_dict(), indent=1), end="")
    if args.format == "json":
        print()
    return 0

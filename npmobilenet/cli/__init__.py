"""The ``npmobilenet`` command: one module per subcommand, discovered in this package.

Each subcommand module defines ``add_parser(subparsers)``, which adds its parser and sets
``func(args) -> int`` as the parser default; modules without it (``errors``, ``arguments``)
serve the subcommands.

Every failure takes one path, :func:`main`: one line on stderr, ``npmobilenet: error: ...``,
and a documented exit code (see :mod:`npmobilenet.cli.errors`); ``--debug`` or
``NPMOBILENET_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from ..runtime import reuse_freed_memory
from .arguments import SubcommandParser
from .errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, describe, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npmobilenet", description="MobileNet v1-v4 in NumPy.",
        epilog="Exit codes: 0 success, 1 bad input or environment (one 'npmobilenet: error:' "
               "line), 2 usage error, 130 interrupted.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also NPMOBILENET_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                       parser_class=SubcommandParser)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # __main__ is the entry point, not a subcommand
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "add_parser"):
            module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)  # usage errors: argparse exits 2
    reuse_freed_memory()  # a command is the whole process: no page faults for each new batch
    debug = args.debug or os.environ.get("NPMOBILENET_DEBUG", "") not in ("", "0")
    try:
        trace_file = getattr(args, "trace", None)  # --trace FILE (train, predict)
        if trace_file is not None:
            return _traced(args, trace_file)
        return args.func(args) or 0
    except KeyboardInterrupt:
        report("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`npmobilenet evaluate | head`): stop quietly, and keep Python
        # from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:  # noqa: BLE001 -- the one place that turns errors into messages
        if debug:
            raise
        message, code = describe(error)
        report(message)
        return code


def _traced(args, path) -> int:
    """Run the subcommand inside an op trace (``--trace FILE``) and write the trace to ``path``,
    also when the command fails: what ran up to the failure is what one wants to see."""
    from ..tracing import trace

    with trace() as recorded:
        try:
            return args.func(args) or 0
        finally:
            recorded.save(path)


if __name__ == "__main__":
    sys.exit(main())

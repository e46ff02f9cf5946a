"""Argument types for numeric flags (the checks of :mod:`npmobilenet.validate`, at parse time)
and the help formatter of every subcommand.

``parser.add_argument("--topk", type=integer(1))`` makes argparse refuse ``--topk 0`` with its
usage message and exit code 2, using the same ranges the Python API enforces.
"""

from __future__ import annotations

import argparse

from .. import validate

MAX_BATCH = 4096  # images per batch on the command line


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each flag's default, except for switches and for defaults that depend on
    the data or the model (None; their help says what they are)."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0 or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class SubcommandParser(argparse.ArgumentParser):
    """The parser of a subcommand: its ``--help`` shows the defaults (:class:`HelpFormatter`)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def integer(low: int | None = None, high: int | None = None):
    """An argparse type: an integer in ``[low, high]``."""
    def parse(text: str) -> int:
        try:
            return validate.integer("value", int(text), low, high)
        except ValueError as error:
            raise argparse.ArgumentTypeError(_reason(error, text, "an integer")) from None
    parse.__name__ = "integer"
    return parse


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False):
    """An argparse type: a finite float in the interval from ``low`` to ``high``."""
    def parse(text: str) -> float:
        try:
            return validate.number("value", float(text), low, high, low_open=low_open,
                                   high_open=high_open)
        except ValueError as error:
            raise argparse.ArgumentTypeError(_reason(error, text, "a number")) from None
    parse.__name__ = "number"
    return parse


def _reason(error: ValueError, text: str, kind: str) -> str:
    """The range the value missed, or what kind of value ``text`` should have been."""
    message = str(error).removeprefix("value: ")
    return message if message.startswith("expected") else f"expected {kind}, got {text!r}"

"""Command-line arguments that several ``tljob`` commands share (pure: argparse only).

``--set`` is one contract everywhere: repeatable ``KEY=VALUE`` words collected in
``args.overrides``, in order, for ``tljob.config.load``'s override path.
"""

from __future__ import annotations

import argparse


def add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``; ``help`` says what it
    overrides, with an example for that command."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def seconds(text: str) -> float:
    """argparse type: a number of seconds, 0 or more (not infinite, not NaN)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value

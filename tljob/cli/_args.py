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


def add_config_args(parser: argparse.ArgumentParser, file: bool, required: bool = False) -> None:
    """``--config FILE`` (when ``file``) and ``--set``, as ``train``, ``prepare``, ``demo``
    and ``config`` take them."""
    if file:
        parser.add_argument("--config", required=required, help="YAML config file.")
    add_overrides(
        parser,
        "Override one setting, e.g. --set train.batch_size=64 or "
        "--set train.stages.1.epochs=3 (repeatable; values are YAML; applied after "
        "the file, in order).",
    )


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """``--verbose``: Ray's own logs on the console too."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Also show Ray's own logs (Ray Data plans and progress bars, Ray Train "
        "records, TensorFlow's C++ logs); by default they go only to Ray's session logs.",
    )

"""``tljob config [--config job.yaml] [--set ...] [--reference]``: the resolved config as
YAML (every default filled in), or the reference of every setting as Markdown."""

from __future__ import annotations

import argparse

from tljob.cli._args import add_config_args
from tljob.config import dump_config, load_config
from tljob.config.reference import config_reference

NAME = "config"
HELP = "Print the resolved config, or the reference."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, file=True)
    parser.add_argument(
        "--reference", action="store_true", help="Print every setting as a Markdown table."
    )


def run(args: argparse.Namespace) -> int:
    if args.reference:
        print(config_reference())
        return 0
    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0

"""``tljob backbones [NAME ...]``: the registered backbones as a table, or the named ones
described (sizes, weights files, blocks); ``tljob.zoo.listing`` renders both."""

from __future__ import annotations

import argparse

NAME = "backbones"
HELP = "List the registered backbones, or describe the named ones (sizes, weights files, blocks)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="Backbones to describe.")


def run(args: argparse.Namespace) -> int:
    from tljob.zoo import BACKBONES, get_backbone
    from tljob.zoo.listing import describe_backbone, format_backbones

    if not args.names:
        print(format_backbones(BACKBONES.values()))
        return 0
    specs = [get_backbone(name) for name in args.names]  # unknown: close matches, exit 2
    print("\n\n".join(describe_backbone(spec) for spec in specs))
    return 0

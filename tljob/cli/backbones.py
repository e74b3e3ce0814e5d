"""``tljob backbones [NAME ...]``: the registered backbones as a table, or the named ones
described (sizes, weights files, blocks); ``tljob.zoo.listing`` renders both."""

from __future__ import annotations

import argparse
import json

NAME = "backbones"
HELP = "List the registered backbones, or describe the named ones (sizes, weights files, blocks)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="Backbones to describe.")
    parser.add_argument(
        "--json",
        action="store_true",
        help="Print the table (of every backbone, or of the NAMEs) as a JSON list of "
        "objects instead: name, family, default_image_size, min_image_size, parameters, "
        "preprocessing, imagenet, blocks.",
    )


def run(args: argparse.Namespace) -> int:
    from tljob.zoo import BACKBONES, get_backbone
    from tljob.zoo.listing import backbone_record, describe_backbone, format_backbones

    if args.json:
        chosen = [get_backbone(n) for n in args.names] if args.names else BACKBONES.values()
        print(json.dumps([backbone_record(spec) for spec in chosen], indent=1))
        return 0
    if not args.names:
        print(format_backbones(BACKBONES.values()))
        return 0
    specs = [get_backbone(name) for name in args.names]  # unknown: close matches, exit 2
    print("\n\n".join(describe_backbone(spec) for spec in specs))
    return 0

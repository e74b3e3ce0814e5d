"""``tljob backbones [NAME ...]``: the registered backbones as a table, or the named ones
described (sizes, weights files, blocks); ``tljob.zoo.listing`` renders both.

``tljob backbones rank --config job.yaml [--candidates ...] [--subsample N] [--top K]``:
the candidates scored by a linear probe on their features of a stratified subsample of the
job's data, and timed on the cluster (``tljob.rank``). ``rank`` is no backbone's name, so
the first NAME being ``rank`` selects it; the ranking options are refused without it.
"""

from __future__ import annotations

import argparse
import json

from tljob.cli._args import add_overrides, add_verbose, positive
from tljob.errors import UserError

NAME = "backbones"
HELP = (
    "List the registered backbones, or describe the named ones (sizes, weights files, "
    "blocks); `tljob backbones rank` ranks candidates on a job's data."
)
RANK = "rank"
DEFAULT_CANDIDATES = "small"
DEFAULT_SUBSAMPLE = 1000
DEFAULT_TOP = 3
# the options only `rank` takes, by their dest
RANK_OPTIONS = ("config", "candidates", "subsample", "top", "out", "overrides")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="Backbones to describe; or `rank` to rank candidates on a job's data.",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="Print the table (of every backbone, or of the NAMEs) as a JSON list of "
        "objects instead: name, family, default_image_size, min_image_size, parameters, "
        "preprocessing, imagenet, blocks.",
    )
    rank = parser.add_argument_group(
        "rank",
        "`tljob backbones rank --config job.yaml`: score each candidate by a linear probe "
        "(multinomial logistic regression) on its pooled features of a stratified subsample "
        "of the job's prepared training and validation images, time its forward pass on the "
        "cluster, and write rank.csv, rank.json, rank.png and sweep.yaml (over the top K).",
    )
    rank.add_argument("--config", help="The job's YAML config file (required with `rank`).")
    rank.add_argument(
        "--candidates",
        metavar="LIST",
        help="Backbones to rank: comma-separated names (NAME:none or NAME:imagenet sets that "
        "candidate's weights; else the job's `model.weights`), 'all', or 'small' (at most "
        f"8M parameters). Default: {DEFAULT_CANDIDATES}.",
    )
    rank.add_argument(
        "--subsample",
        type=positive,
        metavar="N",
        help=f"Training images the probe fits on (default {DEFAULT_SUBSAMPLE}; every class in "
        "proportion, seeded by data.seed); half as many validation images score it.",
    )
    rank.add_argument(
        "--top",
        type=positive,
        metavar="K",
        help=f"Backbones in sweep.yaml's grid: the K best (default {DEFAULT_TOP}).",
    )
    rank.add_argument(
        "--out",
        metavar="DIR",
        help="Folder (or URI) for the outputs; default <run.storage_path>/rank/<run.name>.",
    )
    add_overrides(rank, "Override one job setting, e.g. --set data.image_size=96 (repeatable).")
    add_verbose(rank)


def run(args: argparse.Namespace) -> int:
    if args.names[:1] == [RANK]:
        return run_rank(args)
    given = [f"--{d.replace('overrides', 'set')}" for d in RANK_OPTIONS if getattr(args, d)]
    if given:
        raise UserError(f"{', '.join(given)}: only `tljob backbones rank` takes these options")
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


def run_rank(args: argparse.Namespace) -> int:
    """``tljob backbones rank``: every argument checked before Ray starts (exit 2)."""
    from tljob import storage
    from tljob.rank.choose import RankArgumentError, parse_candidates

    if len(args.names) > 1:
        raise RankArgumentError(
            f"`tljob backbones rank` takes no backbone names ({' '.join(args.names[1:])}): "
            "give them as --candidates NAME,..."
        )
    if args.json:
        raise RankArgumentError("--json: `tljob backbones rank` writes rank.json instead")
    candidates = parse_candidates(args.candidates or DEFAULT_CANDIDATES)
    if not args.config:
        raise RankArgumentError("`tljob backbones rank` needs --config job.yaml")
    from tljob.config import load_config

    job = load_config(args.config, list(args.overrides))
    storage.configure(storage.S3Settings.from_config(job.s3))
    out = storage.resolve(args.out or job.run.storage_path.rstrip("/") + f"/rank/{job.run.name}")
    from tljob.rank.driver import rank_driver_fn
    from tljob.rank.outputs import format_table, write_outputs

    rows, context = rank_driver_fn(
        job, candidates, args.subsample or DEFAULT_SUBSAMPLE, out, args.verbose
    )
    written = write_outputs(out, rows, job, args.top or DEFAULT_TOP, context)
    print(format_table(rows, written))
    return 0

"""``tljob prepare --config job.yaml [--set ...]``: decode the images into Parquet shards on
Ray, without training (what ``train`` does first when they are missing)."""

from __future__ import annotations

import argparse

from tljob.cli._args import add_config_args, add_verbose
from tljob.config import load_config
from tljob.report import format_prepared
from tljob.run.job import prepare_job

NAME = "prepare"
HELP = (
    "Decode the images once into Parquet shards (what train does first when they "
    "are missing); prepared data that is already there is reused."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, file=True, required=True)
    add_verbose(parser)


def run(args: argparse.Namespace) -> int:
    job = load_config(args.config, args.overrides)
    print(format_prepared(prepare_job(job, verbose=args.verbose)))
    return 0

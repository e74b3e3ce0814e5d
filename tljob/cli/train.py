"""``tljob train --config job.yaml [--set ...]``: run (or resume) a training job on Ray.

The config is loaded, its weights checked and the data listed before Ray starts
(``tljob.run.job``); the end-of-run table is printed from the run's summary.
"""

from __future__ import annotations

import argparse

from tljob.cli._args import add_config_args, add_verbose, seconds
from tljob.report import format_summary
from tljob.run.job import resolve_job, run_job

NAME = "train"
HELP = "Run (or resume) a training job on Ray."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, file=True, required=True)
    add_verbose(parser)
    parser.add_argument(
        "--lock-wait",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="When another run holds the run directory, wait up to this long for it to end "
        "or go stale (no heartbeat for 5 min) instead of exiting at once; a RayJob retry "
        "uses it after a crashed driver (default 0).",
    )


def run(args: argparse.Namespace) -> int:
    job = resolve_job(args.config, args.overrides)
    summary = run_job(job, verbose=args.verbose, lock_wait_s=args.lock_wait)
    print(format_summary(summary, title=f"tljob run {job.run.name!r}"))
    return 0

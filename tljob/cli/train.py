"""``tljob train --config job.yaml [--set ...]``: run (or resume) a training job on Ray.

The config is loaded, its weights checked and the data listed before Ray starts
(``tljob.run.job``); the end-of-run table is printed from the run's summary (``--json``:
the summary itself). ``--dry-run`` makes the checks only (``tljob.run.dry_run``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

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
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run",
        action="store_true",
        help="Only check: make every check a run makes before it trains (config, object "
        "store, data listing, batches, weights, run directory, lock and resume plan, the Ray "
        "cluster and its memory), print one line per check and what the run would do, and "
        "exit 0, or 2 with the error the run would give. Trains nothing, decodes no image "
        "and writes nothing into the run directory (on s3:// the object-store check writes "
        "and deletes one probe object there, as a run's does).",
    )
    mode.add_argument(
        "--json",
        action="store_true",
        help="At the end print the run's summary as JSON (the content of its summary.json, "
        "plus `run_dir`) instead of the table; tljob's progress lines then go to stderr, so "
        "stdout holds the JSON alone.",
    )


def run(args: argparse.Namespace) -> int:
    job = resolve_job(args.config, args.overrides)
    if args.dry_run:
        from tljob.run.dry_run import dry_run

        dry_run(job, args.config, verbose=args.verbose, lock_wait_s=args.lock_wait)
        return 0
    if args.json:
        with contextlib.redirect_stdout(sys.stderr):  # every line but the JSON
            summary = run_job(job, verbose=args.verbose, lock_wait_s=args.lock_wait)
        print(json.dumps(summary, indent=1))
        return 0
    summary = run_job(job, verbose=args.verbose, lock_wait_s=args.lock_wait)
    print(format_summary(summary, title=f"tljob run {job.run.name!r}"))
    return 0

"""``tljob tune --config sweep.yaml [--set ...] [--resume] [--verbose]``: a hyperparameter
sweep on Ray Tune.

The sweep file is loaded and validated here, before Ray starts (an unknown search path or
an empty space is exit 2 in well under a second); ``tljob.tune.driver`` (Ray) loads only after.
"""

from __future__ import annotations

import argparse

from tljob.cli._args import add_overrides

NAME = "tune"
HELP = "Run a hyperparameter sweep (a job config plus a `search` section) on Ray Tune."


def add_arguments(tune: argparse.ArgumentParser) -> None:
    tune.add_argument("--config", required=True, help="Sweep YAML file.")
    add_overrides(
        tune,
        "Override one setting of the sweep file, e.g. --set tune.num_samples=8 "
        "(repeatable; values are YAML).",
    )
    tune.add_argument(
        "--resume",
        action="store_true",
        help="Continue the interrupted sweep of the same `tune.name`: finished trials are "
        "kept, unfinished ones resume from their checkpoints.",
    )
    tune.add_argument(
        "--verbose",
        action="store_true",
        help="Also show Ray Tune's status tables, the trials' own lines and Ray's logs.",
    )


def run(args: argparse.Namespace) -> int:
    from tljob import output
    from tljob.config.sweep import load_sweep

    sweep = load_sweep(args.config, args.overrides)  # ConfigError: exit 2, no Ray yet
    with output.native_logs_hidden(args.verbose):
        from tljob.tune.driver import sweep_driver_fn  # Ray (and TensorFlow) from here on

    sweep_driver_fn(sweep, resume=args.resume, verbose=args.verbose)
    return 0

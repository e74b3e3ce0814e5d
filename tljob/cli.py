"""``tljob`` command line: ``train``, ``demo`` and ``config``.

User errors (bad config, unusable data, missing weights) print one clear message and exit
with code 2, before Ray starts whenever the problem can be seen without it. Ray and
TensorFlow are imported only once a command really needs them, so errors come fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from tljob.backbones import get_backbone, resolve_weights_file
from tljob.config import JobConfig, dump_config, load_config
from tljob.errors import JobFailedError, UserError
from tljob.report import data_summary_table

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
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="Override one setting, e.g. --set train.batch_size=64 or "
            "--set train.stages.1.epochs=3 (repeatable; values are YAML; applied after "
            "the file, in order).",
        )

    train = sub.add_parser("train", help="Run (or resume) a training job on Ray.")
    add_config_args(train, file=True, required=True)

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
        "--images-per-class",
        type=int,
        default=None,
        help="Images of each class to use (default sized for ~5 minutes on 2 cores).",
    )
    add_config_args(demo, file=False)

    config = sub.add_parser("config", help="Print the resolved config, or the reference.")
    add_config_args(config, file=True)
    config.add_argument(
        "--reference", action="store_true", help="Print every setting as a Markdown table."
    )
    return parser


def resolve_job(config_path: str | None, overrides: Sequence[str]) -> JobConfig:
    """Load and validate the config, and check weights exist, all before Ray starts."""
    job = load_config(config_path, list(overrides))
    resolve_weights_file(get_backbone(job.model.backbone), job.model.weights, job.image_size)
    return job


def run_job(job: JobConfig) -> dict[str, Any]:
    """List the data (cheap, no Ray), then train on Ray. Returns the run summary."""
    from tljob import data  # Ray and TensorFlow load here, not for config errors
    from tljob.run import driver

    listing = data.list_images(job.data.source, job.data.max_images_per_class)
    outcome = driver.run_job_driver_fn(job, listing)
    return {**outcome.summary, "run_dir": outcome.run_dir}


def _cmd_train(args: argparse.Namespace) -> int:
    job = resolve_job(args.config, args.overrides)
    summary = run_job(job)
    print(format_summary(summary, title=f"tljob run {job.run.name!r}"))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tljob import demo

    summary = demo.run_demo(
        data_dir=args.data_dir,
        workdir=args.workdir,
        images_per_class=args.images_per_class,
        overrides=args.overrides,
    )
    print(format_summary(summary, title="tljob demo: Fashion-MNIST"))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(config_reference())
        return 0
    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0


def config_reference() -> str:
    """Every setting with its default and description, as a Markdown table."""
    import typing

    from pydantic import BaseModel

    rows = ["| setting | default | description |", "| --- | --- | --- |"]

    def cell(text: str) -> str:
        return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")

    def walk(model: type[BaseModel], prefix: str, defaults: Any) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            default = getattr(defaults, name, None) if defaults is not None else None
            if defaults is None and not field.is_required():
                default = field.get_default(call_default_factory=True)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.", default)
                continue
            args = typing.get_args(annotation)
            item = args[0] if typing.get_origin(annotation) is list and args else None
            if isinstance(item, type) and issubclass(item, BaseModel):
                names = ", ".join(getattr(d, "name", "?") for d in default or [])
                shown = f"{len(default or [])} entries: {names}"
                rows.append(f"| `{prefix}{name}` | {shown} | {cell(field.description)} |")
                walk(item, f"{prefix}{name}[].", None)
                continue
            if field.is_required():
                shown = "required"
            elif default in (None, ""):
                shown = "empty"
            else:
                shown = f"`{default}`"
            rows.append(f"| `{prefix}{name}` | {shown} | {cell(field.description)} |")

    walk(JobConfig, "", JobConfig.model_construct())
    return "\n".join(rows)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_summary(summary: dict[str, Any], title: str) -> str:
    """The end-of-run table: data, per-stage validation accuracy, where things are."""
    classes = summary["classes"]
    lines = [
        "",
        title,
        "=" * len(title),
        f"backbone          {summary['backbone']} (weights: {summary['weights']}), "
        f"{summary['image_size']}x{summary['image_size']}, {summary['num_workers']} workers",
        f"classes           {len(classes)}: {', '.join(classes)}",
    ]
    lines += data_summary_table(summary["data"])
    lines += ["", f"{'stage':<18}{'epochs':>6}  {'val_acc best':>12}  {'val_acc last':>12}"]
    for name, st in summary["stages"].items():
        lines.append(
            f"{name:<18}{st['epochs']:>6}  {_fmt(st['best_val_accuracy']):>12}  "
            f"{_fmt(st['final_val_accuracy']):>12}"
        )
    best, exported = summary["best"], summary["exported_model"]
    lines += [
        "",
        f"best epoch        {best['global_epoch']} ({best['stage']} {best['epoch']}): "
        f"val_accuracy {_fmt(best['val_accuracy'])}",
        f"exported model    {summary['run_dir']}/{exported['path']} "
        f"(re-checked: {exported['correct']}/{exported['images']} val images correct, "
        f"{_fmt(exported['accuracy'])})",
        f"checkpoints       {summary['checkpoint']}  (latest; rerun the same run.name to resume)",
        f"run directory     {summary['run_dir']}  (summary.json, history.csv, config.yaml)",
        f"wall time         {summary['wall_seconds']:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"train": _cmd_train, "demo": _cmd_demo, "config": _cmd_config}
    try:
        return commands[args.command](args)
    except UserError as e:
        print(f"tljob: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except JobFailedError as e:
        print(f"tljob: failed: {e}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except KeyboardInterrupt:
        print("tljob: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

"""``tljob evaluate --model RUN_DIR|MODEL --source URI [--out DIR] [--corruptions]``: an
exported model scored on labelled images, on the Ray workers: metrics.json, per_class.csv,
mistakes.csv, confusion_matrix.png, reliability.png and report.md (``tljob.infer.evaluate``).

The model, its class names and the labelled inputs are checked before Ray starts (exit 2
for what cannot be used, labels the model does not know included).
"""

from __future__ import annotations

import argparse

from tljob.cli._args import add_overrides, add_verbose, positive
from tljob.cli.predict import configure_s3

NAME = "evaluate"
HELP = (
    "Score an exported model on labelled images (class folders or a uri,label manifest, "
    "local or s3://) on the Ray workers: metrics, confusion matrix, calibration, mistakes, "
    "and with --corruptions its accuracy under corrupted images."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="A run directory (its model/model.keras and labels.json) or a .keras file "
        "with labels.json beside it or in the folder above; local or s3://.",
    )
    parser.add_argument(
        "--source",
        required=True,
        help="Labelled images: a folder (or s3:// prefix) of class folders, or a manifest "
        "(.csv, .parquet) with columns uri,label. Every label must be a class of the model.",
    )
    parser.add_argument(
        "--out",
        help="Folder (or s3:// prefix) for the evaluation files (default: <run>/evaluation).",
    )
    parser.add_argument(
        "--corruptions",
        action="store_true",
        help="Also score every image under 6 corruptions at 3 severities (gaussian_noise, "
        "gaussian_blur, jpeg, brightness, contrast, pixelate): robustness.csv and "
        "robustness.png. 19 times the scoring work.",
    )
    parser.add_argument(
        "--batch-size",
        type=positive,
        metavar="N",
        help="Images per model call (default: sized from the input size, as for predict).",
    )
    parser.add_argument(
        "--actors",
        type=positive,
        metavar="N",
        help="Model actors (default: one per GPU, or per CPU without GPUs).",
    )
    add_overrides(
        parser,
        "An `s3` setting, e.g. --set s3.endpoint_url=http://127.0.0.1:8333 --set "
        "s3.allow_http=true (repeatable; empty settings come from the AWS variables).",
    )
    add_verbose(parser)


def run(args: argparse.Namespace) -> int:
    configure_s3(args.overrides, NAME)
    from tljob.infer.evaluate import EvaluateRequest, evaluate_driver_fn

    evaluate_driver_fn(
        EvaluateRequest(
            model=args.model,
            source=args.source,
            out=args.out,
            batch_size=args.batch_size,
            actors=args.actors,
            corruptions=args.corruptions,
            verbose=args.verbose,
        )
    )
    return 0

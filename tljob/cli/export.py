"""``tljob export``: a run's model in a format that serves without tljob.

    tljob export --model tljob-runs/my-run --format savedmodel
    tljob export --model s3://bucket/runs/my-run/model/model.keras --format tflite --out DIR

``--model`` names a run directory (its ``model/model.keras`` and ``labels.json``), a
sweep's ``best/`` folder, or a ``.keras`` file with ``labels.json`` beside it or in its
folder's parent, local or ``s3://``. The export goes to ``--out``, by default
``<run>/export/<format>/``, and appears there whole or not at all, with ``labels.json``,
``model_card.json`` and ``model_card.md``. What is written: ``tljob.serving``; how to
call it: docs/pages/serving.md.
"""

from __future__ import annotations

import argparse

from tljob.cli._args import add_verbose
from tljob.serving.export import FORMATS, export_for_serving  # pure: TF loads inside

NAME = "export"
HELP = "Export a trained model for serving without tljob (SavedModel, TFLite, ONNX)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="RUN_DIR|MODEL_URI",
        help="A run directory (or a sweep's best/ folder), or a model.keras file with the "
        "run's labels.json beside it or in its folder's parent; local or s3://.",
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="savedmodel: signatures for encoded JPEG/PNG bytes and for uint8 images of any "
        "size, both answering probabilities and class names; tflite and onnx: uint8 images "
        "at the model's own size (onnx needs the `onnx` extra: pip install 'tljob[onnx]').",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="Folder to export into, local or s3:// (default: <run>/export/<format>). It "
        "must be new, empty, or an earlier export, which is replaced.",
    )
    add_verbose(parser)


def run(args: argparse.Namespace) -> int:
    export_for_serving(args.model, args.format, args.out, verbose=args.verbose)
    return 0

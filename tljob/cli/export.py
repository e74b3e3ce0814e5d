"""``tljob export``: a run's model in a format that serves without tljob.

    tljob export --model tljob-runs/my-run --format savedmodel
    tljob export --model s3://bucket/runs/my-run/model/model.keras --format tflite --out DIR

``--model`` names a run directory (its ``model/model.keras`` and ``labels.json``), a
sweep's ``best/`` folder, or a ``.keras`` file with ``labels.json`` beside it or in its
folder's parent, local or ``s3://``. The export goes to ``--out``, by default
``<run>/export/<format>/``, and appears there whole or not at all, with ``labels.json``,
``model_card.json`` and ``model_card.md``. What is written: ``tljob.serving``; how to
call it: docs/pages/serving.md.

``s3://`` is reached as a run reaches it: the standard AWS variables, and ``--set s3.KEY=
VALUE`` for what a job's ``s3`` section would say (``s3.endpoint_url``, ``s3.allow_http``,
...); there is no job config here, so no other setting is taken.
"""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from tljob import storage
from tljob.cli._args import add_overrides
from tljob.config.load import apply_override, error_lines, parse_override
from tljob.config.s3 import S3Section
from tljob.errors import UserError
from tljob.serving.export import FORMATS, export_for_serving  # pure: TF loads inside

NAME = "export"
HELP = "Export a trained model for serving without tljob (SavedModel, TFLite, ONNX)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="URI",
        help="The model: a run directory (or a sweep's best/ folder), or a model.keras file "
        "with the run's labels.json beside it or in its folder's parent; local or s3://.",
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
    add_overrides(
        parser,
        "An s3 setting, as a job's `s3` section holds it, for a store other than AWS, e.g. "
        "--set s3.endpoint_url=http://minio:9000 --set s3.allow_http=true (repeatable; "
        "credentials come from the standard AWS variables, never from here).",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Also show TensorFlow's and the converters' own log lines (hidden by default).",
    )


def configure_s3(overrides: list[str]) -> None:
    """Make ``--set s3.KEY=VALUE`` (over the AWS variables) this process's S3 settings; no
    ``--set``: the AWS variables alone, as for any process tljob did not configure."""
    if not overrides:
        return
    tree: dict = {}
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] != "s3" or len(keys) != 2:
            raise UserError(
                f"--set {text.partition('=')[0]!r}: tljob export takes s3 settings only "
                f"({', '.join('s3.' + name for name in S3Section.model_fields)}); the run's "
                "own settings come with its model"
            )
        apply_override(tree, keys, value)
    try:
        section = S3Section.model_validate(tree["s3"])
    except ValidationError as e:
        errors = [{**error, "loc": ("s3", *error["loc"])} for error in e.errors()]
        raise UserError("invalid --set:\n  " + "\n  ".join(error_lines(errors))) from None
    storage.configure(storage.S3Settings.from_config(section))


def run(args: argparse.Namespace) -> int:
    configure_s3(args.overrides)
    export_for_serving(args.model, args.format, args.out, verbose=args.verbose)
    return 0

"""``tljob predict --model RUN_DIR|MODEL --source URI --out URI``: class predictions for
new images, computed on the Ray workers and written in resumable parts.

The flags are checked and the model, its class names and the inputs are listed before Ray
starts (exit 2 for what cannot be used); ``tljob.infer.predict`` does the rest.
"""

from __future__ import annotations

import argparse
from typing import Any

from tljob.cli._args import add_overrides, add_verbose, positive

NAME = "predict"
HELP = (
    "Predict the classes of new images (a folder, a manifest or an s3:// prefix) with an "
    "exported model, on the Ray workers; Parquet or CSV parts that a rerun completes."
)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability between 0 and 1")
    return value


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
        help="The images: a folder or s3:// prefix (every image file below it), a uri,label "
        "or uri-only manifest (.csv, .parquet), or one image file.",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="Folder or s3:// prefix for the parts, _predict.json and _SUCCESS.json. A "
        "rerun into the same folder keeps the parts already written and writes the rest.",
    )
    parser.add_argument(
        "--format",
        choices=("parquet", "csv"),
        default="parquet",
        help="Format of the parts (default parquet).",
    )
    parser.add_argument(
        "--top-k",
        type=positive,
        metavar="K",
        help="Class names and probabilities per image, most probable first (default: 5, or "
        "the number of classes if fewer).",
    )
    parser.add_argument(
        "--batch-size",
        type=positive,
        metavar="N",
        help="Images per model call (default: sized from the input size, see the predict "
        "page: 32 at 224 px on CPU, 128 on GPU).",
    )
    parser.add_argument(
        "--actors",
        type=positive,
        metavar="N",
        help="Model actors (default: one per GPU, or per CPU without GPUs, but no more than "
        "the images keep busy, 4 batches each).",
    )
    parser.add_argument(
        "--part-size",
        type=positive,
        default=10_000,
        metavar="N",
        help="Images per part file (default 10000); a killed run loses at most the parts "
        "it was still filling.",
    )
    parser.add_argument(
        "--min-confidence",
        type=_probability,
        metavar="P",
        help="With --as-manifest: the lowest top-1 probability a prediction needs to go "
        "into the manifest.",
    )
    parser.add_argument(
        "--as-manifest",
        metavar="FILE",
        help="With --min-confidence: also write a uri,label CSV manifest of the predictions "
        "whose top-1 probability is at least P (pseudo-labels; `data.source` reads it).",
    )
    add_overrides(
        parser,
        "An `s3` setting, as a job config's s3 section takes it, e.g. --set "
        "s3.endpoint_url=http://127.0.0.1:8333 --set s3.allow_http=true (repeatable; "
        "empty settings come from the AWS variables, as for train).",
    )
    add_verbose(parser)


def s3_settings(overrides: list[str], command: str = NAME) -> Any:
    """The ``storage.S3Settings`` of ``--set s3.KEY=VALUE`` (the only settings ``command``
    takes), checked (``UserError``); None without any: every process then finds its
    settings in the AWS variables, as for train."""
    from tljob import storage
    from tljob.config import load_config
    from tljob.errors import UserError

    others = [o for o in overrides if not o.startswith("s3.")]
    if others:
        raise UserError(
            f"--set {others[0]!r}: {command} takes only `s3.*` settings (e.g. --set "
            "s3.endpoint_url=https://host:port)"
        )
    if not overrides:
        return None
    job = load_config(None, ["data.source=unused", *overrides])
    return storage.S3Settings.from_config(job.s3)


def configure_s3(overrides: list[str], command: str = NAME) -> None:
    """Apply ``--set s3.KEY=VALUE`` (the only settings ``command`` takes) to
    ``tljob.storage``."""
    from tljob import storage

    settings = s3_settings(overrides, command)
    if settings is not None:
        storage.configure(settings)


def check_flags(args: argparse.Namespace) -> None:
    """The rules between the flags that argparse does not state (``UserError``): checked
    by ``run`` and, before any pod starts, by ``tljob k8s render --predict``."""
    from tljob.errors import UserError

    if (args.min_confidence is None) != (args.as_manifest is None):
        raise UserError(
            "--min-confidence and --as-manifest go together: give both (e.g. "
            "--min-confidence 0.9 --as-manifest pseudo.csv) or neither"
        )


def run(args: argparse.Namespace) -> int:
    check_flags(args)
    configure_s3(args.overrides)
    from tljob.infer.predict import PredictRequest, run_predict

    run_predict(
        PredictRequest(
            model=args.model,
            source=args.source,
            out=args.out,
            format=args.format,
            top_k=args.top_k,
            batch_size=args.batch_size,
            actors=args.actors,
            part_size=args.part_size,
            min_confidence=args.min_confidence,
            as_manifest=args.as_manifest,
            verbose=args.verbose,
        )
    )
    return 0

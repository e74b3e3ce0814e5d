"""``tljob export``'s steps in order. Pure at import: TensorFlow is imported only after the
inputs are checked, so a wrong path or folder is refused in a second.

1. ``locate`` the model and the run files beside it (exit 2 naming what is missing);
   refuse an ``--out`` that holds something else (``publish.check_replaceable``).
2. Copy the model to local disk (from ``s3://`` too), hash it, load it, check it is a
   tljob model whose classes match ``labels.json`` (``formats.load_tljob_model``).
3. Write the format into a staged folder with ``labels.json``, ``model_card.json`` and
   ``model_card.md``, then publish it whole at ``--out`` (``publish.staged``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from tljob import output, storage
from tljob.errors import JobFailedError, UserError
from tljob.report import clean_reason
from tljob.serving import publish
from tljob.serving.card import CARD_MD, card_json, card_markdown, model_card
from tljob.serving.locate import LABELS_FILE, ModelSource, locate
from tljob.zoo import file_sha256
from tljob.zoo.weights_record import read_record

PRIMARY = {"savedmodel": "saved_model.pb", "tflite": "model.tflite", "onnx": "model.onnx"}
FORMATS = tuple(PRIMARY)
ONNX_MODULES = ("tf2onnx", "onnx")  # the `onnx` extra

log = output.logger("serving")


@dataclass(frozen=True)
class ExportResult:
    out: str  # the URI of the published folder
    files: dict[str, str]  # relative path -> sha256, the format's files and labels.json
    card: dict[str, Any]


def export_for_serving(
    model_uri: str, fmt: str, out_uri: str | None = None, verbose: bool = False
) -> ExportResult:
    """Export the model ``model_uri`` names (a run directory or a ``.keras`` file, local or
    ``s3://``) as ``fmt`` (one of ``FORMATS``) into ``out_uri``, by default
    ``<run>/export/<fmt>``. ``UserError`` (exit 2) for anything wrong with the inputs."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")  # the CLI offers FORMATS only
    source = locate(model_uri)
    out = storage.resolve(out_uri) if out_uri else source.default_out(fmt)
    publish.check_replaceable(out)
    if fmt == "onnx":
        _check_onnx_installed()
    with tempfile.TemporaryDirectory(prefix="tljob-export-") as tmp:
        local = _local_copy(source, tmp)
        model_sha256 = file_sha256(local)
        log.info(f"export: {source.model.uri} (sha256 {model_sha256[:12]}...) as {fmt}")
        with output.native_logs_hidden(verbose):
            import tensorflow as tf

            from tljob.serving import formats
            from tljob.serving.graph import ServingGraph
        if not verbose:
            tf.get_logger().setLevel("ERROR")  # "Assets written to ..." and the like
        classes = len(source.class_names)
        model = formats.load_tljob_model(local, source.model.uri, classes)
        policy = formats.mixed_policy(model)
        if policy and fmt in formats.FLOAT32_ONLY:
            log.info(
                f"export: the model computes in {policy}, which {fmt} cannot run; it is "
                "converted in float32 (the same weights; its probabilities differ from the "
                f".keras model's by the rounding {policy} does)"
            )
            copy = formats.float32_copy(local, tmp)
            model = formats.load_tljob_model(copy, source.model.uri, classes)
        graph = ServingGraph(model, source.class_names)
        with publish.staged(out, PRIMARY[fmt]) as folder:
            with output.native_logs_hidden(verbose):  # the converters' C++ lines
                serving = write_format(formats.WRITERS[fmt], graph, folder, fmt)
            labels = {str(i): name for i, name in enumerate(source.class_names)}
            with open(os.path.join(folder, LABELS_FILE), "w") as f:
                f.write(json.dumps(labels, indent=1) + "\n")
            files = folder_digests(folder)
            export = {
                "tljob_version": tljob_version(),
                "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "model_sha256": model_sha256,
            }
            described = formats.describe(model, policy)
            record = initial_weights_record(source)
            card = model_card(source, fmt, export, described, serving, files, record)
            with open(os.path.join(folder, publish.CARD_JSON), "w") as f:
                f.write(card_json(card))
            with open(os.path.join(folder, CARD_MD), "w") as f:
                f.write(card_markdown(card))
    log.info(f"export: wrote {out.uri} ({', '.join(_listing(files))})")
    log.info(f"export: {_calls(card['serving'])} (see {CARD_MD})")
    return ExportResult(out=out.uri, files=files, card=card)


def write_format(writer: Any, graph: Any, folder: str, fmt: str) -> dict[str, Any]:
    """Run a format's writer; a converter's failure (TFLite's and tf2onnx' own exceptions
    carry pages of their graph) becomes one ``JobFailedError`` paragraph (exit 1)."""
    try:
        return writer(graph, folder)
    except UserError:
        raise
    except Exception as e:
        if fmt == "savedmodel":
            raise  # no converter: a failure here is tljob's own, traceback and all
        first = clean_reason(str(e).strip().splitlines()[0] if str(e).strip() else "")
        raise JobFailedError(
            f"the {fmt} converter failed on this model ({type(e).__name__}: {first[:300]}); "
            "nothing was written to --out. --verbose shows the converter's own log; "
            "--format savedmodel needs no converter and serves the same model"
        ) from e


def _calls(serving: dict[str, Any]) -> str:
    """``serving_default(image_bytes string (any)), ... -> probabilities, class_names, ...``"""

    def tensor(name: str, spec: dict[str, Any]) -> str:
        dims = ", ".join("any" if d is None else str(d) for d in spec["shape"])
        return f"{name} {spec['dtype']} ({dims})"

    calls = [
        f"{name}({', '.join(tensor(n, spec) for n, spec in sig['inputs'].items())})"
        for name, sig in serving["signatures"].items()
    ]
    outputs = next(iter(serving["signatures"].values()))["outputs"]
    return f"{', '.join(calls)} -> {', '.join(outputs)}"


def _listing(files: dict[str, str]) -> list[str]:
    tops = sorted({rel.split("/", 1)[0] + ("/" if "/" in rel else "") for rel in files})
    return [*tops, publish.CARD_JSON, CARD_MD]


class OnnxUnavailableError(UserError):
    """``--format onnx`` where its converter is not installed."""

    def __init__(self, missing: str) -> None:
        super().__init__(
            f"--format onnx needs tf2onnx and onnx, and {missing} cannot be imported here; "
            "install them with: pip install 'tljob[onnx]' (or: pip install tf2onnx onnx), "
            "or export --format savedmodel, which any TensorFlow loads"
        )


def initial_weights_record(source: ModelSource) -> dict[str, Any] | None:
    """The tljob record inside the run's initial weights file (``summary.json``'s
    ``initial_weights``): the backbone it was made for and, for converted torchvision
    weights, the checkpoint it came from with its sha256. None when the run started from
    random weights or the file carries no record; a file that can no longer be read is
    said in the log and in the card (``unreadable``), and the export goes on."""
    initial = (source.summary or {}).get("initial_weights") or {}
    if not initial.get("file"):
        return None
    try:
        where = storage.resolve(initial["file"])
        with where.fs.open_input_file(where.path) as f:  # h5py reads the header only
            record = read_record(f, where.uri)
    except (OSError, UserError) as e:
        reason = clean_reason(str(e))
        log.info(f"export: the initial weights file's record is not readable ({reason})")
        return {"unreadable": reason}
    return None if record is None else asdict(record)


def _check_onnx_installed() -> None:
    missing = [m for m in ONNX_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise OnnxUnavailableError(" and ".join(missing))


def _local_copy(source: ModelSource, tmp: str) -> str:
    """The model file on local disk: itself, or a download of an ``s3://`` one."""
    if source.model.is_local():
        return source.model.path
    local = os.path.join(tmp, "model.keras")
    with source.model.fs.open_input_stream(source.model.path) as src, open(local, "wb") as dst:
        while chunk := src.read(8 << 20):
            dst.write(chunk)
    return local


def folder_digests(folder: str) -> dict[str, str]:
    """Relative posix path -> sha256 of every file under ``folder``, sorted."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder).replace(os.sep, "/")] = file_sha256(path)
    return dict(sorted(found.items()))


def tljob_version() -> str:
    try:
        return importlib.metadata.version("tljob")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"

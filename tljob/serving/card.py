"""``model_card.json`` and ``model_card.md`` beside every export (pure).

Made from what the run recorded, nothing recomputed: ``summary.json`` (data counts, the
best and final epochs' validation metrics, the exported model's re-check, a test score
where the run has one, weights provenance with the sha256 of the initial weights file)
and ``config.yaml`` (the resolved config), plus what the export itself knows (the source
model's sha256, each written file's sha256, how to call it). A model exported without its
run's summary or config says so instead of guessing. Both files pass through
``storage.redact``; the resolved config holds no credential to begin with (the ``s3``
section has none, and a config holding one is refused when loaded).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from tljob.serving.locate import ModelSource
from tljob.serving.publish import EXPORT_MARKER
from tljob.storage import redact

CARD_MD = "model_card.md"
CARD_FORMAT = 1


def model_card(
    source: ModelSource,
    fmt: str,
    export: Mapping[str, Any],
    model: Mapping[str, Any],
    serving: Mapping[str, Any],
    files: Mapping[str, str],
    weights_record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``model_card.json``'s content. ``export``: format-independent facts of this export
    (``tljob_version``, ``created``, ``model_sha256``); ``model``: ``backbone`` and
    ``image_size`` as read from the model; ``serving``: the writer's description of its
    inputs and outputs; ``files``: relative path -> sha256 of every file written;
    ``weights_record``: the tljob record in the initial weights file, if any."""
    summary = source.summary or {}
    metrics = {key: summary[key] for key in ("best", "final", "exported_model") if key in summary}
    metrics.update({k: v for k, v in summary.items() if k.startswith("test")})
    weights = None
    if summary or source.config:
        config_model = (source.config or {}).get("model", {})
        weights = {
            "model.weights": summary.get("weights", config_model.get("weights")),
            "initial_weights": summary.get("initial_weights"),  # {file, sha256}; none: random
            "record": dict(weights_record) if weights_record else None,
        }
    run = None
    if summary:
        keys = ("run", "epochs", "best_metric", "num_workers", "precision", "wall_seconds")
        run = {k: summary[k] for k in keys if k in summary}
    return {
        EXPORT_MARKER: {"card_format": CARD_FORMAT, "format": fmt, **export},
        "source": {
            "model": source.model.uri,
            "model_sha256": export.get("model_sha256"),
            "labels": source.labels.uri,
            "run_dir": source.run_dir.uri,
            "summary_json": summary != {},
            "config_yaml": source.config is not None,
        },
        "model": {
            **model,
            "num_classes": len(source.class_names),
            "classes": list(source.class_names),
        },
        "serving": dict(serving),
        "files": dict(files),
        "run": run,
        "data": summary.get("data"),
        "metrics": metrics or None,
        "weights": weights,
        "config": source.config,
    }


def card_json(card: Mapping[str, Any]) -> str:
    return redact(json.dumps(card, indent=1)) + "\n"


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card for people: what the model is, how to call it, what it was trained on and
    how well it did, where its weights came from, and the config."""
    info, model, source = card[EXPORT_MARKER], card["model"], card["source"]
    title = (card["run"] or {}).get("run") or source["run_dir"]
    lines = [
        f"# Model card: {title}",
        "",
        f"Backbone `{model['backbone']}`, input {model['image_size']}x{model['image_size']} "
        f"RGB, {model['num_classes']} classes, computing in {_precision(model)}; exported as "
        f"`{info['format']}` by tljob "
        f"{info['tljob_version']} on {info['created']} from `{source['model']}` "
        f"(sha256 `{source['model_sha256']}`).",
        "",
        "## How to call it",
        "",
        *_serving_lines(card["serving"]),
        "## Classes",
        "",
        *_class_lines(model["classes"], card["data"]),
        "## Data",
        "",
        *_data_lines(card["data"]),
        "## Metrics",
        "",
        *_metric_lines(card["metrics"]),
        "## Weights",
        "",
        *_weights_lines(card["weights"], source),
        "## Files",
        "",
        "| file | sha256 |",
        "| --- | --- |",
        *(f"| `{name}` | `{digest}` |" for name, digest in card["files"].items()),
        "",
        "## Configuration",
        "",
    ]
    if card["config"] is None:
        lines += ["No `config.yaml` was found beside the model.", ""]
    else:
        dumped = yaml.safe_dump(card["config"], sort_keys=False).rstrip()
        lines += ["The run's resolved `config.yaml`:", "", "```yaml", dumped, "```", ""]
    return redact("\n".join(lines))


def _precision(model: Mapping[str, Any]) -> str:
    trained, exported = model.get("precision"), model.get("exported_precision")
    if trained == exported:
        return str(trained)
    return f"{exported} (trained in {trained}, which this format cannot run)"


def _shape(shape: list[int | None]) -> str:
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"


def _serving_lines(serving: Mapping[str, Any]) -> list[str]:
    lines = ["| signature | inputs | outputs |", "| --- | --- | --- |"]
    for name, sig in serving["signatures"].items():
        inputs, outputs = (
            "<br>".join(f"`{n}` {t['dtype']} {_shape(t['shape'])}" for n, t in part.items())
            for part in (sig["inputs"], sig["outputs"])
        )
        lines.append(f"| `{name}` | {inputs} | {outputs} |")
    lines.append("")
    if serving.get("note"):
        lines += [f"Note: {serving['note']}.", ""]
    return lines


def _class_lines(classes: list[str], data: Mapping[str, Any] | None) -> list[str]:
    splits = (data or {}).get("splits", {})
    columns = ["index", "class", *(f"{name} images" for name in splits)]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for i, c in enumerate(classes):
        counts = [str(split.get("per_class_used", {}).get(c, "-")) for split in splits.values()]
        lines.append("| " + " | ".join([str(i), c, *counts]) + " |")
    return [*lines, ""]


def _data_lines(data: Mapping[str, Any] | None) -> list[str]:
    if not data:
        return ["No `summary.json` was found beside the model: data counts unknown.", ""]
    used = ", ".join(f"{name} {split['used']}" for name, split in data["splits"].items())
    reasons = data.get("quarantined_reasons") or {}
    why = f" ({', '.join(f'{r} {n}' for r, n in reasons.items())})" if reasons else ""
    return [
        f"- listed: {data.get('listed')}; used: {used}",
        f"- duplicates removed: {data.get('duplicates')}; quarantined: "
        f"{data.get('quarantined')}{why}; skipped at listing: {data.get('skipped_at_listing')}",
        "",
    ]


def _scalars(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every number or string in a nested record, as (dotted key, value)."""
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _scalars(v, f"{prefix}{k}.")]
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return [(prefix.rstrip("."), value)]
    return []


_EPOCH_METRICS = ("val_accuracy", "val_macro_f1", "val_loss", "global_epoch", "stage")


def _metric_lines(metrics: Mapping[str, Any] | None) -> list[str]:
    if not metrics:
        return ["No `summary.json` was found beside the model: metrics unknown.", ""]
    lines = ["| what | metric | value |", "| --- | --- | --- |"]
    titles = {
        "best": "validation, best epoch",
        "final": "validation, last epoch",
        "exported_model": "validation, exported model re-check",
    }
    for key, value in metrics.items():
        pairs = _scalars(value)
        if key in ("best", "final"):
            pairs = [(k, v) for k, v in pairs if k in _EPOCH_METRICS]
        for name, v in pairs:
            shown = f"{v:.4f}" if isinstance(v, float) else v
            lines.append(f"| {titles.get(key, key)} | {name} | {shown} |")
    return [*lines, ""]


def _weights_lines(weights: Mapping[str, Any] | None, source: Mapping[str, Any]) -> list[str]:
    lines = []
    if weights is None:
        lines.append("- backbone weights: unknown (no `summary.json` or `config.yaml`)")
    else:
        lines.append(f"- `model.weights`: {weights['model.weights']}")
        initial = weights["initial_weights"]
        if initial:
            file, sha256 = initial["file"], initial["sha256"]
            lines.append(f"- initial weights file: `{file}`, sha256 `{sha256}`")
            record = weights["record"]
            if record and "unreadable" in record:
                lines.append(f"- its tljob record: not readable now ({record['unreadable']})")
            elif record:
                made = f"- its tljob record: made for backbone `{record['backbone']}`"
                if record.get("source"):
                    made += f", converted from `{record['source']}`"
                if record.get("source_sha256"):
                    made += f" (sha256 `{record['source_sha256']}`)"
                lines.append(made)
        elif weights["model.weights"] == "none":
            lines.append("- initial weights file: none (the backbone started from random weights)")
        else:
            lines.append("- initial weights file: not recorded by the run")
    lines.append(f"- trained model: `{source['model']}`, sha256 `{source['model_sha256']}`")
    return [*lines, ""]

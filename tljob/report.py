"""What a person reads about a run: the end-of-run table, the data summary lines, the list
of files set aside, and clean reasons for bad files.

Pure: imports neither Ray nor TensorFlow, nor any other tljob module. Everything renders
from the summary dicts (``summary.json`` and its ``data`` entry,
``PreparedData.summary()``), so what is printed is what is written down.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

LABEL_WIDTH = 18
_OBJECT_REPR = re.compile(r"<[^<>]*(?:\bobject\b| at 0x)[^<>]*>|<\w+(?:\.\w+)+[^<>]*>")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")


def clean_reason(text: str) -> str:
    """``text`` without object reprs (``<_io.BytesIO object at 0x7f…>``) or memory
    addresses, which differ on every run and mean nothing to the reader."""
    text = _ADDRESS.sub("", _OBJECT_REPR.sub("", text))
    return re.sub(r"\s+", " ", text).strip().rstrip(":").strip()


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def data_summary_rows(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) rows for a data summary; the first states the accounting
    ``listed = train + val (+ test) + duplicates + quarantined`` (test only when the data
    has a test split)."""
    splits = data["splits"]
    names = [name for name in ("train", "val", "test") if name in splits]
    used = " + ".join(f"{splits[name]['used']} {name}" for name in names)
    rows = [
        (
            "images",
            f"{data['listed']} listed = {used} + "
            f"{data['duplicates']} duplicates + {data['quarantined']} quarantined",
        ),
        *(
            (
                f"{name} images",
                f"{splits[name]['used']} used ({_counts(splits[name]['per_class_used'])})",
            )
            for name in names
        ),
    ]
    if data["quarantined"]:
        rows.append(("quarantined", _counts(data.get("quarantined_reasons", {}))))
    if data["skipped_at_listing"]:
        rows.append(
            (
                "skipped files",
                f"{data['skipped_at_listing']} at listing ({_counts(data['skipped_reasons'])})",
            )
        )
    return rows


def data_summary_table(data: Mapping[str, Any], label_width: int = LABEL_WIDTH) -> list[str]:
    """The data rows of the end-of-run table, labels padded to ``label_width``."""
    return [f"{label:<{label_width}}{text}" for label, text in data_summary_rows(data)]


def data_summary_line(data: Mapping[str, Any]) -> str:
    """The same rows on one line, for the driver's log."""
    rows = "; ".join(f"{label} {text}" for label, text in data_summary_rows(data))
    return f"data: {data['classes']} classes; {rows}"


def set_aside_lines(
    quarantined: Sequence[Mapping[str, str]],
    duplicates: Sequence[Mapping[str, str]],
    limit: int = 10,
) -> list[str]:
    """Up to ``limit`` quarantined files and ``limit`` duplicates, one per line."""
    lines = [f"  quarantined {q['path']}: {q['reason']}" for q in quarantined[:limit]]
    if len(quarantined) > limit:
        lines.append(f"  ... {len(quarantined) - limit} more quarantined in data_report.json")
    lines += [f"  duplicate {d['path']} of {d['duplicate_of']}" for d in duplicates[:limit]]
    if len(duplicates) > limit:
        lines.append(f"  ... {len(duplicates) - limit} more duplicates in data_report.json")
    return lines


def format_prepared(report: Mapping[str, Any]) -> str:
    """What ``tljob prepare`` prints: where the shards are, and the data accounting."""
    prepared = report["prepared"]
    how = "reused (fingerprint unchanged)" if prepared["reused"] else "prepared now"
    lines = [
        f"{'prepared data':<{LABEL_WIDTH}}{prepared['uri']}  ({how})",
        f"{'quarantine list':<{LABEL_WIDTH}}{prepared['quarantine_csv']}",
        f"{'classes':<{LABEL_WIDTH}}{report['classes']}",
        *data_summary_table(report),
    ]
    lines += set_aside_lines(report["quarantined_files"], report["duplicate_files"])
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def restarts_row(summary: Mapping[str, Any]) -> str:
    """The table's row for ``summary.json``'s ``restarts`` and ``epochs_repeated``."""
    restarts, repeated = summary["restarts"], summary["epochs_repeated"]
    text = f"{restarts} worker-group restart{'' if restarts == 1 else 's'}"
    if restarts:
        text += f" after a failure, {repeated} epoch{'' if repeated == 1 else 's'} trained again"
    return f"{'restarts':<{LABEL_WIDTH}}{text}"


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
        f"val_accuracy {_fmt(best['val_accuracy'])}, "
        f"val_macro_f1 {_fmt(best.get('val_macro_f1', float('nan')))}"
        + (f" (by {summary['best_metric']})" if "best_metric" in summary else ""),
        *(
            [f"precision         {summary['precision']}, jit_compile {summary['jit_compile']}"]
            if "precision" in summary
            else []
        ),
        *([restarts_row(summary)] if "restarts" in summary else []),
        f"exported model    {summary['run_dir']}/{exported['path']} "
        f"(re-checked: {exported['correct']}/{exported['images']} val images correct, "
        f"{_fmt(exported['accuracy'])})",
        *([_test_row(summary["test"])] if "test" in summary else []),
        f"checkpoints       {summary['checkpoint']}  (latest; rerun the same run.name to resume)",
        *(
            [f"prepared data     {summary['prepared_data']}"]
            if summary.get("prepared_data")
            else []
        ),
        f"run directory     {summary['run_dir']}  (summary.json, history.csv, config.yaml)",
        f"wall time         {summary['wall_seconds']:.0f} s",
    ]
    return "\n".join(lines)


def _test_row(test: Mapping[str, Any]) -> str:
    """The end table's line for the held-out test split (scored once, at the end)."""
    return (
        f"test split        {test['images']} images: accuracy {_fmt(test['accuracy'])}, "
        f"macro-F1 {_fmt(test['macro_f1'])}, NLL {test['nll']:.4f}, ECE {test['ece']:.4f} "
        f"({test['metrics']})"
    )

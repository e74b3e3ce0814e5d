"""``report.md``: an evaluation's figures, tables and plots on one page (pure).

The page links the PNGs by relative name, so it reads correctly next to them (the
evaluation's output directory, local or downloaded from S3). The file names every writer
and the page agree on are the constants below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tljob.evaluate.corruptions import ALL_SEVERITIES, RobustnessRow
from tljob.evaluate.metrics import Mistake
from tljob.run.ledger import EpochRow, best_row

METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "per_class.csv"
MISTAKES_CSV = "mistakes.csv"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"
LEARNING_CURVES_PNG = "learning_curves.png"
ROBUSTNESS_CSV = "robustness.csv"
ROBUSTNESS_PNG = "robustness.png"
REPORT_MD = "report.md"
MISTAKES_SHOWN = 10

# (key in metrics.json, label, key of the same figure in a run's EpochRow or None)
_SCORES = (
    ("accuracy", "accuracy", "val_accuracy"),
    ("top5_accuracy", "top-5 accuracy", None),
    ("macro_f1", "macro-F1", "val_macro_f1"),
    ("nll", "NLL (mean -ln p(true))", "val_loss"),
    ("brier", "Brier score", None),
    ("ece", "expected calibration error", None),
)


def report_markdown(
    metrics: Mapping[str, Any],
    *,
    model: str,
    source: str,
    mistakes: Sequence[Mistake] = (),
    robustness: Sequence[RobustnessRow] | None = None,
    history: Sequence[EpochRow] | None = None,
    best_metric: str = "val_accuracy",
) -> str:
    """The text of ``report.md`` for ``metrics`` (``metrics.score``'s dict) of ``model`` on
    ``source`` (shown as given: pass URIs without secrets). Sections: scores (beside the
    run's best validation epoch by ``best_metric`` when ``history`` is given: ``val_loss``
    is shown against NLL, equal only without label smoothing), per class, confusion matrix,
    calibration, the first ``MISTAKES_SHOWN`` of ``mistakes`` (``metrics.mistakes``'
    order) out of all of them, robustness when ``robustness`` is given, learning curves when
    ``history`` is given (the PNG files named by the constants, next to the page)."""
    best = best_row(history, best_metric) if history else None
    lines = [
        "# Evaluation",
        "",
        f"- model: `{model}`",
        f"- source: `{source}`",
        f"- images: {metrics['images']}, classes: {len(metrics['classes'])}",
        "",
        f"## Scores ([{METRICS_JSON}]({METRICS_JSON}))",
        "",
    ]
    if best is None:
        lines += ["| figure | this evaluation |", "| --- | --- |"]
    else:
        lines += [
            f"| figure | this evaluation | the run's best validation epoch (epoch "
            f"{best.global_epoch}, stage {best.stage}) |",
            "| --- | --- | --- |",
        ]
    for key, label, val_key in _SCORES:
        if key not in metrics:
            continue
        row = f"| {label} | {metrics[key]:.4f} |"
        if best is not None:
            row += f" {getattr(best, val_key):.4f} |" if val_key else " |"
        lines.append(row)
    lines += [
        "",
        f"ECE over {metrics['ece_bins']} equal-width confidence bins; NLL with probabilities "
        f"clipped to [{metrics['nll_epsilon']:g}, 1 - {metrics['nll_epsilon']:g}]; macro-F1 "
        f"over {metrics['macro_f1_classes']} classes (those with an image or a prediction).",
        "",
        f"## Per class ([{PER_CLASS_CSV}]({PER_CLASS_CSV}))",
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"| {_cell(name)} | {row['precision']:.4f} | {row['recall']:.4f} | "
            f"{row['f1']:.4f} | {row['support']} |"
        )
    lines += [
        "",
        "## Confusion matrix",
        "",
        f"![confusion matrix: counts and row-normalised]({CONFUSION_PNG})",
        "",
        "## Calibration",
        "",
        f"![reliability diagram]({RELIABILITY_PNG})",
        "",
        f"## Most confident mistakes ([{MISTAKES_CSV}]({MISTAKES_CSV}))",
        "",
    ]
    lines += _mistakes(mistakes)
    if robustness is not None:
        lines += ["", f"## Robustness ([{ROBUSTNESS_CSV}]({ROBUSTNESS_CSV}))", ""]
        lines += ["| corruption | severity | accuracy | images |", "| --- | --- | --- | --- |"]
        for r in robustness:
            severity = ALL_SEVERITIES if r.severity is None else r.severity
            lines.append(f"| {r.corruption} | {severity} | {r.accuracy:.4f} | {r.images} |")
        lines += ["", f"![accuracy under corruptions]({ROBUSTNESS_PNG})"]
    lines += ["", "## Learning curves", ""]
    if history:
        lines.append(f"![the run's learning curves]({LEARNING_CURVES_PNG})")
    else:
        lines.append("No run history: the model was given without its run directory.")
    return "\n".join(lines) + "\n"


def _mistakes(mistakes: Sequence[Mistake]) -> list[str]:
    if not mistakes:
        return ["No mistakes."]
    shown = mistakes[:MISTAKES_SHOWN]
    lines = [
        f"{len(shown)} of {len(mistakes)}:",
        "",
        "| uri | true | predicted | confidence |",
        "| --- | --- | --- | --- |",
    ]
    for m in shown:
        lines.append(
            f"| {_cell(m.uri)} | {_cell(m.true)} | {_cell(m.predicted)} | {m.confidence:.4f} |"
        )
    return lines


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")

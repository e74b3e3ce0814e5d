"""A sweep's results (pure): one ``TrialRecord`` per trial, ``trials.csv``, the table printed
at the end of a sweep, and the best trial.

Ranking: only trials with a (finite) best value take part; the better value first (higher
for mode 'max', lower for 'min'); a tie goes to the trial that reached it in fewer epochs
(lower ``best_epoch``), then to the lower trial id.

The best trial is the best of those that ran to their end: only they exported a model, and
the table, the plot and ``best/`` must name the same one. A trial stopped early keeps its
rank in the table but is never the best.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tljob.storage.redact import redact

# The last epoch's metrics written to trials.csv (as final_<name>), validation first.
FINAL_METRICS = ("val_accuracy", "val_macro_f1", "val_loss", "accuracy", "macro_f1", "loss")
MAX_ERROR_CHARS = 2000  # an error cell keeps the end of longer texts (where the cause is)


@dataclass
class TrialRecord:
    """One trial of a sweep.

    ``sampled``: search path -> the value the trial ran with; ``final``: the last reported
    epoch's metrics; ``best_value`` / ``best_epoch``: the best of the sweep's metric over
    the trial's epochs and the (1-based, global) epoch it came from; ``stopped_early``: the
    scheduler (or the time budget) ended it before its run finished; ``error``: why it
    failed, else empty; ``run_uri``: the trial's run folder."""

    trial_id: str
    status: str
    sampled: dict[str, Any] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    best_value: float | None = None
    best_epoch: int | None = None
    epochs_run: int = 0
    stopped_early: bool = False
    error: str = ""
    run_uri: str = ""

    def has_value(self) -> bool:
        """It reported a finite value of the sweep's metric."""
        return self.best_value is not None and math.isfinite(self.best_value)


def best_trial(records: Iterable[TrialRecord], metric: str, mode: str) -> TrialRecord | None:
    """The best of ``records`` that ran to their end (not stopped early, no error) by their
    best ``metric`` value in ``mode`` ('max' or 'min'), ties to fewer epochs then the lower
    trial id; ``None`` when no such trial has a value. (``metric`` names what ``best_value``
    holds; the records carry only its value.)"""
    finished = [r for r in records if not r.stopped_early and not r.error and r.has_value()]
    ranked = ranked_trials(finished, mode)
    return ranked[0] if ranked else None


def ranked_trials(records: Iterable[TrialRecord], mode: str) -> list[TrialRecord]:
    """``records`` best first (see the module doc); trials without a value last, by id."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode ({mode!r}) must be 'max' or 'min'")
    sign = -1.0 if mode == "max" else 1.0

    def key(r: TrialRecord) -> tuple[Any, ...]:
        if not r.has_value():
            return (1, 0.0, 0, r.trial_id)
        epoch = r.best_epoch if r.best_epoch is not None else r.epochs_run
        return (0, sign * float(r.best_value or 0.0), epoch, r.trial_id)

    return sorted(records, key=key)


def trials_csv(records: Iterable[TrialRecord], search_paths: Sequence[str], metric: str) -> str:
    """``trials.csv``: one row per trial in trial id order. Columns: trial_id, status, one
    per search path (the sampled value; lists and mappings as JSON), final_<m> for each of
    ``FINAL_METRICS`` (6 significant digits), best_<metric>, best_epoch, epochs_run,
    stopped_early (true/false), error (redacted, on one line), run_uri. Empty: no value."""
    header = [
        "trial_id",
        "status",
        *search_paths,
        *(f"final_{m}" for m in FINAL_METRICS),
        f"best_{metric}",
        "best_epoch",
        "epochs_run",
        "stopped_early",
        "error",
        "run_uri",
    ]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for r in sorted(records, key=lambda r: r.trial_id):
        writer.writerow(
            [
                r.trial_id,
                r.status,
                *(_sampled_text(r.sampled.get(p)) for p in search_paths),
                *(_metric_text(r.final.get(m)) for m in FINAL_METRICS),
                _metric_text(r.best_value),
                "" if r.best_epoch is None else r.best_epoch,
                r.epochs_run,
                "true" if r.stopped_early else "false",
                one_line_error(r.error),
                r.run_uri,
            ]
        )
    return out.getvalue()


def one_line_error(text: str) -> str:
    """``text`` redacted, its non-empty lines stripped and joined with ' | ', at most
    ``MAX_ERROR_CHARS`` (the end kept)."""
    lines = [line.strip() for line in redact(text).splitlines() if line.strip()]
    flat = " | ".join(lines)
    if len(flat) > MAX_ERROR_CHARS:
        flat = "..." + flat[-(MAX_ERROR_CHARS - 3) :]
    return flat


def results_table(records: Iterable[TrialRecord], metric: str, mode: str) -> str:
    """The sweep's results as fixed-width text, best first, the best trial marked '*':
    trial, status, each sampled value, best ``metric`` and its epoch, epochs run, stopped
    early ('early' or blank), and the first 60 characters of the error of a failed one."""
    ranked = ranked_trials(records, mode)
    best = best_trial(ranked, metric, mode)
    paths: list[str] = []
    for r in ranked:
        paths += [p for p in r.sampled if p not in paths]
    header = ["", "trial", "status", *paths, f"best {metric}", "epoch", "epochs", "stopped"]
    rows = [header]
    for r in ranked:
        rows.append(
            [
                "*" if r is best else "",
                r.trial_id,
                r.status,
                *(_short(r.sampled.get(p)) for p in paths),
                f"{r.best_value:.4f}" if r.has_value() else "-",
                "-" if r.best_epoch is None else str(r.best_epoch),
                str(r.epochs_run),
                "early" if r.stopped_early else "",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    errors = [f"  {r.trial_id}: {one_line_error(r.error)[:60]}" for r in ranked if r.error]
    footer = [f"best: {mode} {metric}" + (f", trial {best.trial_id}" if best else ": none")]
    if ranked and ranked[0].has_value() and ranked[0] is not best:
        footer[0] += " (a trial stopped early has no model, so it is never the best)"
    return "\n".join([*lines, *(["errors:", *errors] if errors else []), *footer]) + "\n"


def _sampled_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)  # floats: the shortest text that reads back equal


def _metric_text(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.6g}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return _sampled_text(value)

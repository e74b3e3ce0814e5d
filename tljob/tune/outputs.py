"""What a sweep tells people (Ray side): one line per trial event while it runs, and
afterwards the records of every trial (from their run directories), ``trials.csv``, the
table, ``sweep.png`` and the best trial's model, labels and summary under ``best/``."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

from ray import tune

from tljob import output, storage
from tljob.config.sweep import Sweep
from tljob.run.ledger import EpochRow
from tljob.tune.plot import sweep_png
from tljob.tune.results import (
    FINAL_METRICS,
    TrialRecord,
    best_trial,
    results_table,
    trials_csv,
)
from tljob.tune.trial import (
    mark_ended,
    read_history,
    sampled_values,
    trial_run_dir,
    trial_run_name,
)

log = output.logger("tune")
say = log.info

BEST_FILES = (("model", "model.keras"), ("labels.json",), ("summary.json",))


def describe_values(values: dict[str, Any]) -> str:
    """``resnet50, lr 3.2e-4``: a trial's sampled values, short."""
    parts = []
    for path, value in values.items():
        name = path.rsplit(".", 1)[-1]
        text = f"{value:.2g}" if isinstance(value, float) else str(value)
        if name == "backbone":
            parts.append(text)
        else:
            parts.append(f"{'lr' if name == 'learning_rate' else name} {text}")
    return ", ".join(parts)


class TrialLines(tune.Callback):
    """Tune callback in the sweep's driver: a ``[tljob]`` line when a trial starts, ends an
    epoch, finishes, is stopped by the scheduler or fails."""

    def __init__(self, sweep: Sweep, expected: int, total_epochs: int) -> None:
        self.sweep, self.expected, self.total_epochs = sweep, expected, total_epochs

    def _name(self, trials: list[Any], trial: Any) -> str:
        values = sampled_values(self.sweep, trial.config)
        number = trials.index(trial) + 1 if trial in trials else "?"
        return f"trial {number}/{max(self.expected, len(trials))} ({describe_values(values)})"

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        say(f"{self._name(trials, trial)}: started as run {self._run(trial)}")

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        epoch, value = result.get("global_epoch"), result.get(self.sweep.tune.metric)
        if isinstance(epoch, int | float) and isinstance(value, int | float):
            say(
                f"{self._name(trials, trial)}: epoch {int(epoch)}/{self.total_epochs}, "
                f"{self.sweep.tune.metric} {value:.4g}"
            )

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        epochs = int(last.get("global_epoch", 0))
        metric = self.sweep.tune.metric
        value = last.get(metric)
        shown = f", {metric} {value:.4g}" if isinstance(value, float) else ""
        stopped = epochs < self.total_epochs
        mark_ended(self.sweep, trial.trial_id, "stopped" if stopped else "finished", epochs)
        if epochs == 0:
            how = "ended before its first epoch"
        elif stopped:
            how = f"stopped by {self.sweep.tune.scheduler.upper()} after {epochs} epoch(s)"
        else:
            how = f"finished {epochs} epoch(s)"
        say(f"{self._name(trials, trial)}: {how}{shown}")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        say(f"{self._name(trials, trial)}: failed: {trial_error_text(trial)}")

    def _run(self, trial: Any) -> str:
        return trial_run_name(self.sweep, trial.trial_id)


def trial_error_text(trial: Any) -> str:
    """The first line of what failed a trial (the user-facing message of a ConfigError)."""
    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception:  # the error file is unreadable: say that something failed
        error = None
    if error is None:
        return "unknown error (see the trial's error file)"
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip()
    return storage.redact(text.splitlines()[0] if text else type(cause).__name__)


TRIAL_DIR_PREFIX = "trial_"


def trial_dirname(trial: Any) -> str:
    """Tune's directory of a trial: ``trial_<id>``, so a result names its trial even when
    the trial failed before reporting anything."""
    return f"{TRIAL_DIR_PREFIX}{trial.trial_id}"


def trial_id_of_dir(path: str) -> str:
    """The trial id in a Tune trial directory's name: ``trial_<id>``, where a restored
    trial's directory may carry a suffix Tune adds (``trial_2fdaf_00001_2491``)."""
    name = os.path.basename(path.rstrip("/"))[len(TRIAL_DIR_PREFIX) :]
    found = re.match(r"[0-9a-f]+_\d{5}", name)
    return found.group(0) if found else name


def _best(rows: list[EpochRow], metric: str, mode: str) -> EpochRow | None:
    """The epoch with the best finite ``metric`` in ``mode`` (any reported metric, either
    direction: ``run.ledger.best_row`` ranks only ``train.best_metric``'s); the earliest on
    a tie."""
    scored = [
        r for r in rows if isinstance(v := getattr(r, metric, None), float) and math.isfinite(v)
    ]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: getattr(r, metric))


def collect_records(sweep: Sweep, results: Any) -> tuple[list[TrialRecord], dict[str, Any]]:
    """A ``TrialRecord`` per trial from its run directory's ``history.csv`` (and Tune's
    result for the error), and each trial's epoch rows by trial id."""
    metric, mode = sweep.tune.metric, sweep.mode
    records, histories = [], {}
    for result in results:
        trial_id = (result.metrics or {}).get("trial_id") or trial_id_of_dir(result.path)
        error = ""
        if result.error is not None:
            cause = getattr(result.error, "cause", None) or result.error
            error = storage.redact(str(cause).strip().splitlines()[0] if str(cause) else "")
        sampled = sampled_values(sweep, result.config or {})
        run_dir = trial_run_dir(sweep, trial_id)
        rows = read_history(run_dir)
        best = _best(rows, metric, mode)
        final = {m: getattr(rows[-1], m) for m in FINAL_METRICS} if rows else {}
        completed = not error and storage.exists(run_dir.join("summary.json"))
        # Stopped: ended by the scheduler (or the time budget) before its run finished. Its
        # run may hold an epoch more than Tune saw: reports reach Tune while it trains on.
        status = "error" if error else ("completed" if completed else "stopped")
        records.append(
            TrialRecord(
                trial_id=trial_id,
                status=status,
                sampled=sampled,
                final=final,
                best_value=getattr(best, metric) if best else None,
                best_epoch=best.global_epoch if best else None,
                epochs_run=len(rows),
                stopped_early=status == "stopped",
                error=error,
                run_uri=run_dir.uri,
            )
        )
        histories[trial_id] = [row.to_dict() for row in rows]
    records.sort(key=lambda r: r.trial_id)
    return records, histories


def copy_best(record: TrialRecord, best_dir: storage.Location) -> None:
    """The best trial's exported model, labels.json and summary.json, as a train run has
    them, under ``best_dir`` (replacing an earlier copy)."""
    run_dir = storage.resolve(record.run_uri)
    storage.delete_dir(best_dir)
    for parts in BEST_FILES:
        storage.write_bytes(best_dir.join(*parts), storage.read_bytes(run_dir.join(*parts)))
    storage.write_text(
        best_dir.join("trial.json"),
        json.dumps(
            {"trial_id": record.trial_id, "run": record.run_uri, **record.sampled}, indent=1
        ),
    )


@dataclass
class SweepOutcome:
    """Where a finished sweep's outputs are (URIs), and its printed table."""

    sweep_dir: str
    trials_csv: str
    plot: str | None
    best_dir: str | None
    table: str
    test: dict[str, Any] | None = None  # the best trial's figures on the test split


def score_best_on_test(outcome: SweepOutcome, prepared_uri: str, verbose: bool) -> dict[str, Any]:
    """The best trial's model scored once on the prepared test split, on the workers (the
    trials never saw it): ``best/test_metrics.json`` and ``best/summary.json["test"]``."""
    from tljob.run.driver import score_test_split

    assert outcome.best_dir is not None
    best = storage.resolve(outcome.best_dir)
    labels = json.loads(storage.read_text(best.join("labels.json")))
    classes = [labels[str(i)] for i in range(len(labels))]
    test = score_test_split(best, prepared_uri, classes, verbose=verbose)
    summary = json.loads(storage.read_text(best.join("summary.json")))
    storage.write_text(best.join("summary.json"), json.dumps({**summary, "test": test}, indent=1))
    say(
        f"best trial on the test split ({test['images']} images, scored once): accuracy "
        f"{test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f}"
    )
    outcome.test = test
    return test


def write_outputs(
    sweep: Sweep, records: list[TrialRecord], histories: dict[str, Any], where: Any, mode: str
) -> SweepOutcome:
    metric = sweep.tune.metric
    paths = list(sweep.search)
    csv_loc = where.join("trials.csv")
    storage.write_text(csv_loc, trials_csv(records, paths, metric))
    table = results_table(records, metric, mode)
    print(table)
    plot_loc = where.join("sweep.png")
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "sweep.png")
        sweep_png(
            records, histories, metric, mode, _lr_path(paths, records), _colour_path(paths), local
        )
        with open(local, "rb") as f:
            storage.write_bytes(plot_loc, f.read())
    # Only a trial that ran to its end exported a model (a stopped one has checkpoints).
    best = best_trial(records, metric, mode)
    best_dir = None
    if best is not None:
        best_dir = where.join("best")
        copy_best(best, best_dir)
        say(
            f"best trial: {best.trial_id} ({describe_values(best.sampled)}), {metric} "
            f"{best.best_value:.4g}; its model, labels and summary: {best_dir.uri}"
        )
    else:
        say("no trial finished, so there is no best model to copy")
    say(f"trials: {csv_loc.uri}")
    say(f"plot: {plot_loc.uri}")
    return SweepOutcome(
        sweep_dir=where.uri,
        trials_csv=csv_loc.uri,
        plot=plot_loc.uri,
        best_dir=best_dir.uri if best_dir else None,
        table=table,
    )


def _lr_path(paths: list[str], records: list[TrialRecord]) -> str | None:
    """The swept learning rate, the plot's x axis, unless a trial's is 'auto' (no number)."""
    path = next((p for p in paths if p.endswith("learning_rate")), None)
    if path is None or any(isinstance(r.sampled.get(path), str) for r in records):
        return None
    return path


def _colour_path(paths: list[str]) -> str | None:
    return next((p for p in paths if p.endswith("backbone")), None)

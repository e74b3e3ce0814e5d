"""What a run has done so far, and where a rerun continues: pure (no Ray, no TensorFlow).

``EpochRow`` is the one definition of an epoch's record: a row of ``history.csv``, an entry
of ``state.json``, the metrics reported to Ray Train and the ``final`` / ``best`` entries
of ``summary.json``. ``TrainState`` travels in every checkpoint (``state.json``): the rows
of every finished epoch, the best row, and what the stage in progress needs to continue
exactly (learning rate after ReduceLROnPlateau, callback counters). ``plan_resume``
compares that state and the saved config with the config of a rerun and says where
training continues, or refuses a rerun whose config would contradict epochs already
trained. ``run_summary`` turns a finished history into ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tljob.config import REPORTED_METRICS, JobConfig
from tljob.errors import UserError


@dataclass(frozen=True)
class EpochRow:
    """One finished epoch: a row of ``history.csv``, an entry of ``state.json``'s history,
    the metrics reported to Ray Train and the ``final`` / ``best`` entries of the summary."""

    global_epoch: int  # 1-based over the whole run
    stage: str
    stage_index: int
    epoch: int  # 1-based within the stage
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float  # what this epoch trained with
    trainable_tensors: int
    seconds: float

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EpochRow:
        """From ``state.json`` or a ``history.csv`` row (strings are converted; float reads
        'nan'); unknown keys are an error, so a changed schema cannot pass silently."""
        types = {f.name: f.type for f in fields(cls)}
        unknown = set(values) - set(types)
        if unknown:
            raise ValueError(f"unknown history columns: {sorted(unknown)}")
        convert = {"int": int, "float": float, "str": str}
        return cls(**{k: convert[types[k]](v) for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, Any]:
        """What every worker reports to Ray Train after the epoch (all but the timing)."""
        return {k: v for k, v in asdict(self).items() if k != "seconds"}


HISTORY_COLUMNS = tuple(f.name for f in fields(EpochRow))
# The compiled metrics are exactly the row's metric columns, in order.
assert HISTORY_COLUMNS[4 : 4 + len(REPORTED_METRICS)] == REPORTED_METRICS


@dataclass
class TrainState:
    """Everything a checkpoint records besides the weights; saved as ``state.json``."""

    learning_rate: float | None = None  # LR of the last stage run, after ReduceLROnPlateau
    callbacks: dict[str, dict[str, float]] = field(default_factory=dict)  # of that stage
    history: list[EpochRow] = field(default_factory=list)  # one row per epoch
    best: EpochRow | None = None  # the best epoch so far
    stopped_early: list[int] = field(default_factory=list)  # stage indices EarlyStopping ended

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        known = {f.name for f in fields(cls)}
        # Older checkpoints also stored a next-stage pointer; the plan derives it from history.
        values = {k: v for k, v in json.loads(text).items() if k in known}
        values["history"] = [EpochRow.from_dict(r) for r in values.get("history", [])]
        if values.get("best") is not None:
            values["best"] = EpochRow.from_dict(values["best"])
        return cls(**values)

    def epochs_done(self, stage_index: int) -> int:
        return sum(1 for row in self.history if row.stage_index == stage_index)


def rank(row: EpochRow) -> tuple[float, float]:
    """Epochs compare by val_accuracy, then by lower val_loss; an epoch with a non-finite
    validation figure ranks below every other."""
    if not (math.isfinite(row.val_accuracy) and math.isfinite(row.val_loss)):
        return (-math.inf, -math.inf)
    return (row.val_accuracy, -row.val_loss)


def is_better(row: EpochRow, best: EpochRow | None) -> bool:
    """Whether ``row`` replaces ``best``: strictly better only, so on a tie the earlier wins."""
    return best is None or rank(row) > rank(best)


def best_row(rows: Sequence[EpochRow]) -> EpochRow:
    """The best epoch of ``rows`` by ``rank``; on a tie the earliest."""
    best = None
    for row in rows:
        if is_better(row, best):
            best = row
    if best is None:
        raise ValueError("no epochs")
    return best


def history_csv(rows: Sequence[EpochRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(row.to_dict() for row in rows)
    return out.getvalue()


def parse_history_csv(text: str) -> list[EpochRow]:
    return [EpochRow.from_dict(row) for row in csv.DictReader(io.StringIO(text))]


def stage_results(rows: Sequence[EpochRow]) -> dict[str, dict[str, Any]]:
    """Per stage, in order: epochs, best and final val_accuracy, final val_loss."""
    per_stage: dict[str, dict[str, Any]] = {}
    for row in rows:
        stage = per_stage.setdefault(row.stage, {"epochs": 0})
        stage.update(
            epochs=stage["epochs"] + 1,
            final_val_accuracy=row.val_accuracy,
            final_val_loss=row.val_loss,
        )
        stage["best_val_accuracy"] = max(stage.get("best_val_accuracy", 0.0), row.val_accuracy)
    return per_stage


def run_summary(
    job: JobConfig,
    classes: Sequence[str],
    data: Mapping[str, Any],
    rows: Sequence[EpochRow],
    exported: Mapping[str, Any],
    wall_seconds: float,
) -> dict[str, Any]:
    """``summary.json`` (before the driver adds the checkpoint and replica check): what
    was trained on what, per-stage results, the best and final epochs, the re-checked
    export."""
    return {
        "run": job.run.name,
        "backbone": job.model.backbone,
        "weights": str(job.model.weights),
        "image_size": job.image_size,
        "num_workers": job.scaling.num_workers,
        "classes": list(classes),
        "data": dict(data),
        "epochs": len(rows),
        "final": rows[-1].to_dict(),
        "best": best_row(rows).to_dict(),
        "stages": stage_results(rows),
        "exported_model": {"path": "model/model.keras", **exported},
        "wall_seconds": round(wall_seconds, 1),
    }


class RunMismatchError(UserError):
    """A rerun whose config contradicts what the run it would resume has already done."""


@dataclass(frozen=True)
class ResumePlan:
    """Where a run starts: ``stage_index`` and the epochs already done in it (``epoch``)."""

    stage_index: int = 0
    epoch: int = 0
    checkpoint: str | None = None  # checkpoint directory name resumed from
    complete: bool = False  # every stage has already run: nothing to train
    message: str = ""


# Settings a rerun may change: where and how fast it runs, not what was trained.
_CHANGEABLE_ON_RESUME = (
    "data.source",
    "data.shuffle_buffer",
    "scaling.",
    "run.checkpoints_to_keep",
    "run.progress_seconds",
    "s3.",  # how the store is reached, not what is in it
)
_STAGE_IDENTITY = ("name", "optimizer", "learning_rate", "trainable")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _changed_settings(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    before, after = _flatten(saved), _flatten(now)
    return [
        f"`{key}` ({before.get(key)!r} -> {after.get(key)!r})"
        for key in sorted(set(before) | set(after))
        if key != "train.stages"
        and not key.startswith(_CHANGEABLE_ON_RESUME)
        and key in before  # a section added to the schema since: nothing to contradict
        and key in after  # a setting removed from the schema since (e.g. `data.layout`)
        and before.get(key) != after.get(key)
    ]


def plan_resume(
    state: TrainState | None,
    checkpoint: str | None,
    saved_config: dict[str, Any] | None,
    job: JobConfig,
    run_uri: str,
) -> ResumePlan:
    """Decide where ``job`` starts, given the newest complete checkpoint's ``state`` (or
    None) and the ``config.yaml`` saved by the run so far.

    A rerun may extend the last stage that trained (more epochs), add stages after it, or
    change where it runs (``scaling``, ``data.source``). It is refused (``RunMismatchError``)
    when it would contradict trained epochs: other settings for a stage that has trained,
    fewer epochs than were trained, a stage removed, an earlier stage extended after a later
    one trained, or any other changed setting (batch size, data split, network, callbacks).
    """
    if state is None or not state.history:
        why = "no complete checkpoint" + (" yet" if saved_config else "")
        return ResumePlan(message=f"starting fresh: {run_uri} has {why}")
    fresh_hint = "; choose a new `run.name` to start afresh"
    if saved_config is not None:
        changed = _changed_settings(saved_config, job.record())
        if changed:
            raise RunMismatchError(
                f"run {run_uri!r} cannot resume with changed settings: {', '.join(changed)}; "
                f"they would not describe the epochs already trained{fresh_hint}"
            )
    saved_stages = (saved_config or {}).get("train", {}).get("stages", [])
    stages = job.train.stages
    done = [state.epochs_done(i) for i in range(max(len(stages), len(saved_stages)))]
    for i, epochs in enumerate(done):
        if not epochs:
            continue
        where = f"train.stages.{i}"
        if i >= len(stages):
            raise RunMismatchError(
                f"`{where}` ({saved_stages[i]['name']!r}) has trained {epochs} epoch(s) but is "
                f"missing from the config{fresh_hint}"
            )
        stage = stages[i].model_dump(mode="json")
        if i < len(saved_stages):
            differs = [
                f"`{k}` ({saved_stages[i][k]!r} -> {stage[k]!r})"
                for k in _STAGE_IDENTITY
                if saved_stages[i].get(k) != stage[k]
            ]
            if differs:
                raise RunMismatchError(
                    f"`{where}` has trained {epochs} epoch(s) and cannot change: "
                    f"{', '.join(differs)}{fresh_hint}"
                )
        if stage["epochs"] < epochs:
            raise RunMismatchError(
                f"`{where}.epochs` ({stage['epochs']}) is less than the {epochs} epoch(s) "
                f"stage {stage['name']!r} has already trained; it can only grow{fresh_hint}"
            )
    finished = [done[i] >= s.epochs or i in state.stopped_early for i, s in enumerate(stages)]
    last_trained = max(i for i, epochs in enumerate(done) if epochs)
    last = state.history[-1]
    after = (
        f"resuming after stage {last.stage!r} epoch {last.epoch} "
        f"(global epoch {last.global_epoch}) from {checkpoint}"
    )
    if all(finished):
        return ResumePlan(
            stage_index=len(stages),
            checkpoint=checkpoint,
            complete=True,
            message=f"{after}: every stage has already run ({len(state.history)} epochs), "
            "nothing to train; raise the last stage's `epochs` or add a stage to train more",
        )
    nxt = finished.index(False)
    if nxt < last_trained:
        raise RunMismatchError(
            f"`train.stages.{nxt}.epochs` ({stages[nxt].epochs}) extends stage "
            f"{stages[nxt].name!r}, but the later stage {stages[last_trained].name!r} has "
            f"already trained; only the last trained stage can be extended{fresh_hint}"
        )
    return ResumePlan(
        stage_index=nxt,
        epoch=done[nxt],
        checkpoint=checkpoint,
        message=f"{after}; next: stage {nxt + 1}/{len(stages)} {stages[nxt].name!r} "
        f"epoch {done[nxt] + 1}/{stages[nxt].epochs}",
    )

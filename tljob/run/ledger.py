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

from tljob.config import REPORTED_METRICS, JobConfig, StageSection, balanced_class_weights
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
    macro_f1: float  # over the epoch's training batches
    val_loss: float
    val_accuracy: float
    val_macro_f1: float  # over the whole validation set (every worker's rows)
    val_class_recall: tuple[float, ...]  # per class index; ';'-separated in history.csv
    learning_rate: float  # what this epoch's first step trained with
    trainable_tensors: int
    seconds: float

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EpochRow:
        """From ``state.json`` or a ``history.csv`` row (strings are converted; float reads
        'nan'); unknown keys are an error, so a changed schema cannot pass silently. Rows
        of runs from before macro-F1 was recorded read it as nan (recall: empty)."""
        types = {f.name: f.type for f in fields(cls)}
        unknown = set(values) - set(types)
        if unknown:
            raise ValueError(f"unknown history columns: {sorted(unknown)}")
        convert = {"int": int, "float": float, "str": str, "tuple[float, ...]": _floats}
        values = {**_ADDED_LATER, **values}
        return cls(**{k: convert[types[k]](v) for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["val_class_recall"] = list(self.val_class_recall)
        return row

    def metrics(self) -> dict[str, Any]:
        """What every worker reports to Ray Train after the epoch (all but the timing)."""
        return {k: v for k, v in self.to_dict().items() if k != "seconds"}


_ADDED_LATER: dict[str, Any] = {
    "macro_f1": math.nan,
    "val_macro_f1": math.nan,
    "val_class_recall": (),
}


def _floats(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        return tuple(float(v) for v in value.split(";") if v)
    return tuple(float(v) for v in value)


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


def rank(row: EpochRow, metric: str = "val_accuracy") -> tuple[float, float]:
    """Epochs compare by ``metric`` (``train.best_metric``), then by lower val_loss (for
    val_loss: by higher val_accuracy); an epoch with a non-finite validation figure ranks
    below every other."""
    figures = (row.val_accuracy, row.val_loss, getattr(row, metric))
    if not all(math.isfinite(v) for v in figures):
        return (-math.inf, -math.inf)
    if metric == "val_loss":
        return (-row.val_loss, row.val_accuracy)
    return (getattr(row, metric), -row.val_loss)


def is_better(row: EpochRow, best: EpochRow | None, metric: str = "val_accuracy") -> bool:
    """Whether ``row`` replaces ``best``: strictly better only, so on a tie the earlier wins."""
    return best is None or rank(row, metric) > rank(best, metric)


def best_row(rows: Sequence[EpochRow], metric: str = "val_accuracy") -> EpochRow:
    """The best epoch of ``rows`` by ``rank``; on a tie the earliest."""
    best = None
    for row in rows:
        if is_better(row, best, metric):
            best = row
    if best is None:
        raise ValueError("no epochs")
    return best


def history_csv(rows: Sequence[EpochRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = row.to_dict()
        values["val_class_recall"] = ";".join(repr(v) for v in row.val_class_recall)
        writer.writerow(values)
    return out.getvalue()


def parse_history_csv(text: str) -> list[EpochRow]:
    return [EpochRow.from_dict(row) for row in csv.DictReader(io.StringIO(text))]


def stage_results(rows: Sequence[EpochRow]) -> dict[str, dict[str, Any]]:
    """Per stage, in order: epochs, best and final val_accuracy and val_macro_f1, final
    val_loss."""
    per_stage: dict[str, dict[str, Any]] = {}
    for row in rows:
        stage = per_stage.setdefault(row.stage, {"epochs": 0})
        stage.update(
            epochs=stage["epochs"] + 1,
            final_val_accuracy=row.val_accuracy,
            final_val_macro_f1=row.val_macro_f1,
            final_val_loss=row.val_loss,
        )
        stage["best_val_accuracy"] = max(stage.get("best_val_accuracy", 0.0), row.val_accuracy)
        stage["best_val_macro_f1"] = max(stage.get("best_val_macro_f1", 0.0), row.val_macro_f1)
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
        "precision": job.train.precision,
        "jit_compile": job.train.jit_compile,
        "class_weight": {
            "mode": job.train.class_weight,
            "weights": dict(zip(classes, class_weights(job, classes, data), strict=True)),
        },
        "best_metric": job.train.best_metric,
        "epochs": len(rows),
        "final": rows[-1].to_dict(),
        "best": best_row(rows, job.train.best_metric).to_dict(),
        "stages": stage_results(rows),
        "exported_model": {"path": "model/model.keras", **exported},
        "wall_seconds": round(wall_seconds, 1),
    }


def class_weights(job: JobConfig, classes: Sequence[str], data: Mapping[str, Any]) -> list[float]:
    """Each class's loss weight, by class index: all 1.0, or 'balanced' from the training
    split's counts (``data["splits"]["train"]["per_class_used"]``, as the summary has them)."""
    if job.train.class_weight == "none":
        return [1.0] * len(classes)
    per_class = data["splits"]["train"]["per_class_used"]
    weights = balanced_class_weights([per_class[c] for c in classes])
    return [weights[i] for i in range(len(classes))]


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
    "train.jit_compile",  # how the same step is compiled, not what it computes
    "s3.",  # how the store is reached, not what is in it
)
# Every stage setting but `epochs` describes the epochs a stage trained, so none may change.
_STAGE_IDENTITY = tuple(name for name in StageSection.model_fields if name != "epochs")


def _stage_defaults() -> dict[str, Any]:
    """A stage's optional settings at their defaults, as saved in ``config.yaml``."""
    required = {"name", "epochs", "learning_rate"}
    stage = StageSection(name="-", epochs=1, learning_rate=1.0).model_dump(mode="json")
    return {k: v for k, v in stage.items() if k not in required}


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
            # A setting the saved stage lacks is newer than the run, which trained with
            # what its default does (defaults keep the old behaviour).
            before = _flatten({**_stage_defaults(), **saved_stages[i]})
            now = _flatten(stage)
            differs = [
                f"`{k}` ({before[k]!r} -> {now.get(k)!r})"
                for k in before
                if k.split(".")[0] in _STAGE_IDENTITY and before[k] != now.get(k)
            ]
            if differs:
                raise RunMismatchError(
                    f"`{where}` has trained {epochs} epoch(s) and cannot change: "
                    f"{', '.join(differs)}{fresh_hint}"
                )
        saved_epochs = saved_stages[i]["epochs"] if i < len(saved_stages) else stage["epochs"]
        if stage["schedule"]["kind"] == "cosine" and stage["epochs"] != saved_epochs:
            raise RunMismatchError(
                f"`{where}.epochs` ({saved_epochs} -> {stage['epochs']}): stage "
                f"{stage['name']!r} has trained {epochs} epoch(s) on a cosine schedule, whose "
                f"curve its epochs fix; add a stage instead{fresh_hint}"
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

"""What a run has done so far, and where a rerun continues: pure (no Ray, no TensorFlow).

``TrainState`` travels in every checkpoint (``state.json``): the history rows of every
finished epoch, the best row, and what the stage in progress needs to continue exactly
(learning rate after ReduceLROnPlateau, callback counters). ``plan_resume`` compares that
state and the saved config with the config of a rerun and says where training continues,
or refuses a rerun whose config would contradict epochs already trained.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field, fields
from typing import Any

from tljob.config import REPORTED_METRICS, JobConfig
from tljob.errors import UserError

HISTORY_COLUMNS = (
    "global_epoch",
    "stage",
    "stage_index",
    "epoch",
    *REPORTED_METRICS,
    "learning_rate",
    "trainable_tensors",
    "seconds",
)
# How to read each history.csv column back (float covers "nan").
HISTORY_TYPES: dict[str, Any] = {
    **dict.fromkeys(HISTORY_COLUMNS, float),
    **dict.fromkeys(("global_epoch", "stage_index", "epoch", "trainable_tensors"), int),
    "stage": str,
}


@dataclass
class TrainState:
    """Everything a checkpoint records besides the weights; saved as ``state.json``."""

    learning_rate: float | None = None  # LR of the last stage run, after ReduceLROnPlateau
    callbacks: dict[str, dict[str, float]] = field(default_factory=dict)  # of that stage
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    best: dict[str, Any] | None = None  # history row of the best epoch so far
    stopped_early: list[int] = field(default_factory=list)  # stage indices EarlyStopping ended

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        known = {f.name for f in fields(cls)}
        # Older checkpoints also stored a next-stage pointer; the plan derives it from history.
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    def epochs_done(self, stage_index: int) -> int:
        return sum(1 for row in self.history if row["stage_index"] == stage_index)


def rank(row: dict[str, Any]) -> tuple[float, float]:
    """Epochs compare by val_accuracy, then by lower val_loss; on a tie the earlier wins."""
    return (row["val_accuracy"], -row["val_loss"])


def is_better(row: dict[str, Any], best: dict[str, Any] | None) -> bool:
    return best is None or rank(row) > rank(best)


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda r: (*rank(r), -r["global_epoch"]))


def history_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def parse_history_csv(text: str) -> list[dict[str, Any]]:
    rows = csv.DictReader(io.StringIO(text))
    return [{k: HISTORY_TYPES[k](v) for k, v in row.items()} for row in rows]


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
        changed = _changed_settings(saved_config, job.model_dump(mode="json"))
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
        f"resuming after stage {last['stage']!r} epoch {last['epoch']} "
        f"(global epoch {last['global_epoch']}) from {checkpoint}"
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

"""The ledger without Ray: the epoch row, the best-epoch rule, resume positions, the summary."""

from __future__ import annotations

import math

import pytest

from tljob.config import load_config
from tljob.run.ledger import (
    EpochRow,
    TrainState,
    best_row,
    history_csv,
    is_better,
    parse_history_csv,
    plan_resume,
    run_summary,
)


def row(n: int, stage: str = "head", stage_index: int = 0, epoch: int | None = None, **kw):
    values = dict(
        global_epoch=n,
        stage=stage,
        stage_index=stage_index,
        epoch=epoch or n,
        loss=1.0,
        accuracy=0.5,
        macro_f1=0.5,
        val_loss=1.0,
        val_accuracy=0.5,
        val_macro_f1=0.5,
        val_class_recall=(0.5, 0.5),
        learning_rate=1e-3,
        trainable_tensors=2,
        seconds=1.0,
    )
    return EpochRow(**{**values, **kw})


def test_best_is_highest_val_accuracy_then_lowest_val_loss():
    rows = [
        row(1, val_accuracy=0.6),
        row(2, val_accuracy=0.7, val_loss=0.9),
        row(3, val_accuracy=0.7, val_loss=0.8),
    ]
    assert best_row(rows).global_epoch == 3


def test_on_a_full_tie_the_earlier_epoch_wins():
    rows = [row(1, val_accuracy=0.7), row(2, val_accuracy=0.7), row(3, val_accuracy=0.7)]
    assert best_row(rows).global_epoch == 1
    assert not is_better(rows[1], rows[0])


def test_a_nan_validation_loss_never_becomes_best():
    nan = row(2, val_accuracy=0.9, val_loss=math.nan)
    assert best_row([row(1, val_accuracy=0.1), nan]).global_epoch == 1
    assert best_row([nan, row(2, val_accuracy=0.1)]).global_epoch == 2
    assert not is_better(nan, row(1, val_accuracy=0.1))


def test_a_row_round_trips_through_history_csv_and_state_json():
    rows = [row(1), row(2, loss=math.inf)]
    back = parse_history_csv(history_csv(rows))
    assert back[0] == rows[0] and back[1].loss == math.inf
    state = TrainState(history=rows, best=rows[0], stopped_early=[0])
    again = TrainState.from_json(state.to_json())
    assert again.history[0] == rows[0] and again.best == rows[0] and again.stopped_early == [0]


def test_unknown_history_columns_are_refused():
    with pytest.raises(ValueError, match="unknown history columns"):
        EpochRow.from_dict({**row(1).to_dict(), "top5": 0.9})


JOB = load_config(
    None,
    ["data.source=/x", "model.weights=none", "train.stages.0.epochs=2", "train.stages.1.epochs=3"],
)


@pytest.mark.parametrize(
    ("history", "stopped_early", "where"),
    [
        ([row(1, epoch=1)], [], (0, 1)),  # mid-stage: the same stage, next epoch
        ([row(1, epoch=1), row(2, epoch=2)], [], (1, 0)),  # last epoch of a stage: next stage
        ([row(1, epoch=1)], [0], (1, 0)),  # EarlyStopping ended the stage: next stage
        (
            [row(1, epoch=1), row(2, epoch=2), row(3, "fine_tune", 1, epoch=1)],
            [],
            (1, 1),
        ),
    ],
)
def test_resume_position_after_each_kind_of_epoch_end(history, stopped_early, where):
    state = TrainState(history=history, best=history[0], stopped_early=stopped_early)
    plan = plan_resume(state, "checkpoint_epoch_0001", JOB.record(), JOB, "/runs/r")
    assert (plan.stage_index, plan.epoch) == where and not plan.complete


def test_after_the_last_epoch_of_the_last_stage_nothing_is_left():
    history = [row(1, epoch=1), row(2, epoch=2)] + [
        row(3 + i, "fine_tune", 1, i + 1) for i in range(3)
    ]
    plan = plan_resume(TrainState(history=history), "c", JOB.record(), JOB, "/runs/r")
    assert plan.complete and plan.stage_index == 2


def test_summary_fields_from_a_known_history():
    history = [
        row(1, epoch=1, val_accuracy=0.4),
        row(2, epoch=2, val_accuracy=0.5),
        row(3, "fine_tune", 1, 1, val_accuracy=0.8),
        row(4, "fine_tune", 1, 2, val_accuracy=0.7, val_loss=0.6),
    ]
    data = {"classes": 2, "listed": 10}
    exported = {"images": 4, "correct": 3, "accuracy": 0.75}
    summary = run_summary(JOB, ["a", "b"], data, history, exported, 12.34)
    assert summary["epochs"] == 4 and summary["wall_seconds"] == 12.3
    assert summary["best"]["global_epoch"] == 3 and summary["final"]["global_epoch"] == 4
    assert summary["stages"] == {
        "head": {
            "epochs": 2,
            "best_val_accuracy": 0.5,
            "final_val_accuracy": 0.5,
            "best_val_macro_f1": 0.5,
            "final_val_macro_f1": 0.5,
            "final_val_loss": 1.0,
        },
        "fine_tune": {
            "epochs": 2,
            "best_val_accuracy": 0.8,
            "final_val_accuracy": 0.7,
            "best_val_macro_f1": 0.5,
            "final_val_macro_f1": 0.5,
            "final_val_loss": 0.6,
        },
    }
    assert summary["weights"] == "none" and summary["image_size"] == 224
    assert summary["exported_model"] == {"path": "model/model.keras", **exported}


def test_macro_f1_and_recall_round_trip_and_old_rows_read_as_nan():
    rows = [row(1, val_macro_f1=0.625, val_class_recall=(1.0, 0.25, 0.1 + 0.2))]
    text = history_csv(rows)
    assert text.splitlines()[0].split(",")[4:11] == [
        "loss",
        "accuracy",
        "macro_f1",
        "val_loss",
        "val_accuracy",
        "val_macro_f1",
        "val_class_recall",
    ]
    assert "1.0;0.25;0.30000000000000004" in text
    assert parse_history_csv(text) == rows
    assert TrainState.from_json(TrainState(history=rows).to_json()).history == rows
    old = {k: v for k, v in row(1).to_dict().items() if "macro_f1" not in k and "recall" not in k}
    back = EpochRow.from_dict(old)
    assert math.isnan(back.val_macro_f1) and back.val_class_recall == ()


def test_the_best_epoch_can_be_chosen_by_macro_f1_or_val_loss():
    rows = [
        row(1, val_accuracy=0.8, val_macro_f1=0.5, val_loss=0.9),
        row(2, val_accuracy=0.7, val_macro_f1=0.6, val_loss=0.7),
        row(3, val_accuracy=0.7, val_macro_f1=0.6, val_loss=0.6),
        row(4, val_accuracy=0.75, val_macro_f1=0.55, val_loss=0.6),
    ]
    assert best_row(rows).global_epoch == 1
    assert best_row(rows, "val_macro_f1").global_epoch == 3  # the tie goes to lower val_loss
    assert best_row(rows, "val_loss").global_epoch == 4  # the tie goes to higher accuracy
    assert not is_better(row(5, val_macro_f1=math.nan), rows[0], "val_macro_f1")
    job = load_config(None, ["data.source=/x", "train.best_metric=val_macro_f1"])
    data = {"splits": {"train": {"per_class_used": {"a": 30, "b": 10}}}}
    summary = run_summary(job, ["a", "b"], data, rows, {}, 1.0)
    assert summary["best"]["global_epoch"] == 3 and summary["best_metric"] == "val_macro_f1"
    assert summary["best"]["val_class_recall"] == [0.5, 0.5]
    assert (summary["precision"], summary["jit_compile"]) == ("float32", False)
    assert summary["class_weight"] == {"mode": "none", "weights": {"a": 1.0, "b": 1.0}}
    balanced = load_config(None, ["data.source=/x", "train.class_weight=balanced"])
    summary = run_summary(balanced, ["a", "b"], data, rows, {}, 1.0)
    assert summary["class_weight"] == {
        "mode": "balanced",
        "weights": {"a": 40 / (2 * 30), "b": 40 / (2 * 10)},
    }

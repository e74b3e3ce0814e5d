"""A sweep's results: trials.csv's exact text, the best trial in either mode (and its ties),
the terminal table."""

from __future__ import annotations

import pytest

from tljob.tune.results import (
    TrialRecord,
    best_trial,
    one_line_error,
    ranked_trials,
    results_table,
    trials_csv,
)

PATHS = ["model.backbone", "train.stages.0.learning_rate"]


def records() -> list[TrialRecord]:
    return [
        TrialRecord(
            trial_id="t0002",
            status="TERMINATED",
            sampled={"model.backbone": "resnet50", "train.stages.0.learning_rate": 0.001},
            final={
                "val_accuracy": 0.75,
                "val_macro_f1": 0.7321428571,
                "val_loss": 0.61234567,
                "accuracy": 0.8,
                "macro_f1": 0.79,
                "loss": 0.5,
            },
            best_value=0.8,
            best_epoch=3,
            epochs_run=4,
            run_uri="/runs/t0002",
        ),
        TrialRecord(
            trial_id="t0001",
            status="TERMINATED",
            sampled={"model.backbone": "mobilenet_v2", "train.stages.0.learning_rate": 1e-05},
            final={
                "val_accuracy": 0.5,
                "val_macro_f1": 0.333333333,
                "val_loss": 1.1,
                "accuracy": 0.5,
                "macro_f1": 0.4,
                "loss": 1.2,
            },
            best_value=0.5,
            best_epoch=1,
            epochs_run=1,
            stopped_early=True,
            run_uri="/runs/t0001",
        ),
        TrialRecord(
            trial_id="t0003",
            status="ERROR",
            sampled={"model.backbone": "resnet50", "train.stages.0.learning_rate": 0.01},
            error='Traceback:\n  File "x.py"\n\nValueError: key AKIAABCDEFGHIJKLMNOP, bad\n',
            run_uri="/runs/t0003",
        ),
    ]


def test_trials_csv_exact_text():
    assert trials_csv(records(), PATHS, "val_accuracy") == (
        "trial_id,status,model.backbone,train.stages.0.learning_rate,final_val_accuracy,"
        "final_val_macro_f1,final_val_loss,final_accuracy,final_macro_f1,final_loss,"
        "best_val_accuracy,best_epoch,epochs_run,stopped_early,error,run_uri\n"
        "t0001,TERMINATED,mobilenet_v2,1e-05,0.5,0.333333,1.1,0.5,0.4,1.2,0.5,1,1,true,,"
        "/runs/t0001\n"
        "t0002,TERMINATED,resnet50,0.001,0.75,0.732143,0.612346,0.8,0.79,0.5,0.8,3,4,false,,"
        "/runs/t0002\n"
        't0003,ERROR,resnet50,0.01,,,,,,,,,0,false,"Traceback: | File ""x.py"" | '
        'ValueError: key [redacted], bad",/runs/t0003\n'
    )


def test_trials_csv_writes_lists_as_json_and_names_the_metric_column():
    record = TrialRecord("a", "TERMINATED", sampled={"model.head.dense_units": [64, 32]})
    text = trials_csv([record], ["model.head.dense_units"], "val_loss")
    header, row = text.splitlines()
    assert header.split(",")[-6] == "best_val_loss"
    assert row.startswith('a,TERMINATED,"[64,32]",,')


def test_errors_are_redacted_flattened_and_keep_their_end():
    assert one_line_error("a\n\n  b  \nc") == "a | b | c"
    long = "x" * 3000 + "\nthe cause"
    flat = one_line_error(long)
    assert len(flat) == 2000 and flat.startswith("...") and flat.endswith("x | the cause")


def test_best_trial_max_and_min():
    rs = records()
    assert best_trial(rs, "val_accuracy", "max").trial_id == "t0002"
    # read as losses t0001 ranks first, but it was stopped early: it has no model to keep
    assert [r.trial_id for r in ranked_trials(rs, "min")] == ["t0001", "t0002", "t0003"]
    assert best_trial(rs, "val_loss", "min").trial_id == "t0002"
    rs[1].stopped_early = False
    assert best_trial(rs, "val_loss", "min").trial_id == "t0001"
    with pytest.raises(ValueError, match="mode"):
        best_trial(rs, "val_accuracy", "maximum")


def test_best_trial_ties_go_to_fewer_epochs_then_the_lower_id():
    def rec(trial_id, value, epoch):
        return TrialRecord(trial_id, "TERMINATED", best_value=value, best_epoch=epoch, epochs_run=5)

    tied = [rec("t3", 0.9, 4), rec("t2", 0.9, 2), rec("t1", 0.9, 4), rec("t0", 0.8, 1)]
    assert best_trial(tied, "val_accuracy", "max").trial_id == "t2"
    tied[1] = rec("t2", 0.9, 4)
    assert best_trial(tied, "val_accuracy", "max").trial_id == "t1"
    assert best_trial(tied, "val_loss", "min").trial_id == "t0"


def test_no_value_no_best():
    failed = [
        TrialRecord("a", "ERROR", error="x"),
        TrialRecord("b", "ERROR", best_value=float("nan")),
    ]
    assert best_trial(failed, "val_accuracy", "max") is None
    assert best_trial([], "val_accuracy", "max") is None


def test_results_table_best_first_and_marked():
    table = results_table(records(), "val_accuracy", "max")
    assert table == (
        "   trial  status      model.backbone  train.stages.0.learning_rate  "
        "best val_accuracy  epoch  epochs  stopped\n"
        "*  t0002  TERMINATED  resnet50        0.001                         "
        "0.8000             3      4\n"
        "   t0001  TERMINATED  mobilenet_v2    1e-05                         "
        "0.5000             1      1       early\n"
        "   t0003  ERROR       resnet50        0.01                          "
        "-                  -      0\n"
        "errors:\n"
        '  t0003: Traceback: | File "x.py" | ValueError: key [redacted], bad\n'
        "best: max val_accuracy, trial t0002\n"
    )
    # the mark, the footer and best/ name one trial: a better one stopped early is not it
    lines = results_table(records(), "val_loss", "min").splitlines()
    assert lines[1].startswith("   t0001") and lines[2].startswith("*  t0002")
    assert lines[-1] == (
        "best: min val_loss, trial t0002 "
        "(a trial stopped early has no model, so it is never the best)"
    )

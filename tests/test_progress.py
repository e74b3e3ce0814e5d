"""The live progress display's model (``tljob.progress``): events in, lines and the live
row out. Pure: no Ray, no TensorFlow, no terminal."""

from __future__ import annotations

import pickle

import pytest

from tljob.progress import (
    Columns,
    EpochFinished,
    EpochStarted,
    Line,
    ProgressState,
    StepDone,
    format_eta,
)

HEAD = EpochStarted(stage="head", stage_index=0, stages=2, epoch=1, epochs=3, steps=50)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0:00"),
        (0.4, "0:00"),
        (59.6, "1:00"),
        (75, "1:15"),
        (3599, "59:59"),
        (3600, "1:00:00"),
        (3725, "1:02:05"),
        (None, "-:--"),
        (float("nan"), "-:--"),
        (float("inf"), "-:--"),
        (-1, "-:--"),
    ],
)
def test_format_eta(seconds, text):
    assert format_eta(seconds) == text


def test_no_live_row_before_the_first_epoch():
    state = ProgressState()
    assert state.columns() is None
    # a step without its epoch (an event dropped) does not invent one
    assert state.apply(StepDone(3, 1.0, 0.5, 10.0, 1.0)) == []
    assert state.columns() is None


def test_epoch_start_shows_an_empty_bar_and_no_eta():
    state = ProgressState()
    assert state.apply(HEAD) == []
    assert state.columns() == Columns(
        where="stage 1/2 head epoch 1/3",
        completed=0,
        total=50,
        steps="step 0/50",
        metrics="",
        rate="",
        eta="ETA -:--",
    )


def test_step_shows_running_metrics_rate_input_wait_and_eta_from_the_epoch_pace():
    state = ProgressState()
    state.apply(HEAD)
    # 10 of 50 steps in 4 s: the other 40 take 16 s at that pace; 23.4 % of it waiting
    assert state.apply(StepDone(10, 0.98765, 0.123449, 79.6, 4.0, 0.234)) == []
    assert state.columns() == Columns(
        where="stage 1/2 head epoch 1/3",
        completed=10,
        total=50,
        steps="step 10/50",
        metrics="loss=0.9877 accuracy=0.1234",
        rate="80 images/s, input wait 23%",
        eta="ETA 0:16",
    )


def test_steps_beyond_the_epoch_are_capped_at_its_length():
    state = ProgressState()
    state.apply(HEAD)
    state.apply(StepDone(51, 0.5, 0.5, 10.0, 20.0))
    columns = state.columns()
    assert (columns.completed, columns.steps, columns.eta) == (50, "step 50/50", "ETA 0:00")


def test_finished_lines_are_prefixed_and_the_epoch_line_ends_the_live_row():
    state = ProgressState()
    assert state.apply(Line("stage 1/2 'head': trainable=head")) == [
        "[tljob] stage 1/2 'head': trainable=head"
    ]
    state.apply(HEAD)
    state.apply(StepDone(50, 0.5, 0.75, 100.0, 10.0))
    # a plain line keeps the live row
    assert state.apply(Line("removing checkpoint_epoch_0001")) == [
        "[tljob] removing checkpoint_epoch_0001"
    ]
    assert state.columns().steps == "step 50/50"
    epoch_line = "stage 1/2 'head' epoch 1/3: loss=0.5000 val_accuracy=0.7000"
    assert state.apply(EpochFinished(epoch_line)) == ["[tljob] " + epoch_line]
    assert state.columns() is None
    # the next epoch starts from zero, not from the last one's step
    state.apply(EpochStarted("head", 0, 2, 2, 3, 50))
    assert state.columns().where == "stage 1/2 head epoch 2/3"
    assert state.columns().completed == 0


def test_custom_prefix():
    assert ProgressState(prefix="> ").apply(Line("x")) == ["> x"]


@pytest.mark.parametrize(
    "event",
    [HEAD, StepDone(1, 0.1, 0.2, 3.0, 4.0), Line("a"), EpochFinished("b")],
)
def test_events_survive_pickling_unchanged(event):
    # they travel from rank 0 to the driver through Ray's object store
    assert pickle.loads(pickle.dumps(event)) == event

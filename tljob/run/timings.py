"""Where an epoch's time went, from the clock marks rank 0 takes: one entry of
``timings.json``, which ``benchmarks/job_overhead.py`` reads to find the job's cost around
the model. Pure (no Ray, no TensorFlow)."""

from __future__ import annotations

from typing import Any

# (phase, first mark, last mark); a phase whose marks were not both taken is left out
PHASES = (
    ("train", "epoch", "val"),  # the training steps, input pipeline included
    ("validation", "val", "val_end"),
    ("callbacks", "val_end", "hooks"),  # Keras' end-of-epoch callbacks before ours
    ("weights_read", "hooks", "weights_read"),
    ("checkpoint_write", "weights_read", "checkpoint_written"),
    ("report_and_upload", "checkpoint_written", "reported"),
    ("history_write", "reported", "history_written"),
    ("wall", "epoch", "history_written"),
)


def epoch_timing(
    global_epoch: int, marks: dict[str, float], input_figures: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The seconds of each phase of epoch ``global_epoch``, from ``marks`` (name ->
    ``time.monotonic()``), rounded to 0.1 ms; with ``input_figures`` (the training steps'
    input wait, ``tljob.run.input_wait``) under ``input``."""
    entry: dict[str, Any] = {"global_epoch": global_epoch}
    entry.update(
        {name: round(marks[b] - marks[a], 4) for name, a, b in PHASES if {a, b} <= set(marks)}
    )
    if input_figures is not None:
        entry["input"] = input_figures
    return entry

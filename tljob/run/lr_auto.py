"""``learning_rate: auto`` on a worker: the stage's rate from a range test, or from the
record of one.

``auto_stage_per_worker`` returns the stage with a number for its rate. The first time a
stage runs, every worker runs ``tljob.nn.lr_find.range_test`` on its training data (a
collective under the strategy: all alike), and rank 0 writes the curve and the choice to
``<run>/lr_find/stage_<k>_<name>.json`` and ``.png``. When that record exists (a resumed
or restarted run), every worker reads the rate from it instead, so the stage continues at
the rate it began with. The test's steps are no epoch: nothing of them reaches the history.
(Every worker checks for the record before the test, and rank 0 writes it only after the
collective test, which no worker can finish alone: all workers decide alike.)
"""

from __future__ import annotations

import io
import json
from typing import Any

from tljob import storage
from tljob.config import StageSection
from tljob.config.train import AUTO_LEARNING_RATE
from tljob.run import lr_curve

RECORD_DIR = "lr_find"
FIGURE_IN = (7.0, 4.5)  # 700 x 450 pixels at 100 dpi


def record_stem(stage_index: int, stage: StageSection) -> str:
    return f"stage_{stage_index + 1}_{stage.name}"


def auto_stage_per_worker(
    worker: Any, stage_index: int, stage: StageSection, fed: Any
) -> StageSection:
    """``stage`` itself unless its rate is 'auto'; else a copy with the picked rate.

    ``worker`` is the ``tljob.run.worker._WorkerRun`` (its strategy, rank, run directory);
    ``fed`` the stage's ``tljob.run.cached_stage.StageInput`` (the model it fits and its
    training data: images, or cached features). Call after the stage's trainable layers
    are set, before it is compiled."""
    if stage.learning_rate != AUTO_LEARNING_RATE:
        return stage
    folder = worker.run_dir.join(RECORD_DIR)
    json_file = folder.join(record_stem(stage_index, stage) + ".json")
    how = "recorded earlier in this run, reused"
    if storage.exists(json_file):
        record = lr_curve.RangeTest.from_json(json.loads(storage.read_text(json_file)))
    else:
        from tljob.nn import lr_find  # TensorFlow: workers only
        from tljob.run.input_clock import InputWaitCallback

        record = lr_find.range_test(
            fed.model,
            stage,
            fed.train,
            lr_curve.range_test_steps(fed.steps, fed.train_in_memory),
            endless=True,  # every worker's training input is (tljob.run.feed)
            strategy=worker.strategy,
            labels=worker.labels,
            jit_compile=worker.job.train.jit_compile,
            # class weights are in the input's sample weights (fit refuses class_weight
            # with a distributed dataset); the clock opens a streamed epoch
            callbacks=[InputWaitCallback(fed.input.clock)],
        )
        record.stage, record.stage_index = stage.name, stage_index
        how = f"{record.seconds:.1f}s"
        if worker.rank == 0:
            storage.write_text(json_file, json.dumps(record.to_json(), indent=1))
            png = io.BytesIO()
            range_test_png(record, png)
            storage.write_bytes(
                folder.join(record_stem(stage_index, stage) + ".png"), png.getvalue()
            )
    worker.say(
        f"stage {stage_index + 1}/{len(worker.stages)} {stage.name!r}: learning rate auto -> "
        f"{record.chosen:.1e} ({record.summary()}; {how}; {json_file.uri})"
    )
    return stage.model_copy(update={"learning_rate": record.chosen})


def range_test_png(record: lr_curve.RangeTest, out: Any) -> None:
    """The curve as ``tljob.evaluate.plots`` draws its figures: each step's loss (faint)
    and the smoothed loss against the rate (log axis), the rule's window shaded, the
    chosen rate and minimum/10 marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_IN, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    kept = len(record.smoothed)
    axes.plot(record.rates, record.losses, color="0.75", linewidth=1, label="step loss")
    axes.plot(record.rates[:kept], record.smoothed, color="C0", label="smoothed loss")
    lo, hi = record.window
    axes.axvspan(record.rates[lo], record.rates[max(lo, hi - 1)], color="C0", alpha=0.08)
    axes.axvline(record.chosen, color="C3", label=f"{record.rule}: {record.chosen:.1e}")
    axes.axvline(
        record.minimum_over_10,
        color="0.4",
        linestyle="--",
        label=f"minimum/10: {record.minimum_over_10:.1e}",
    )
    axes.set_xscale("log")
    finite = [v for v in record.smoothed[lo:hi] if v == v]
    if finite:  # the divergence's spike would flatten the curve the rule read
        axes.set_ylim(min(finite) * 0.95, max(finite) * 1.15)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title(f"learning-rate range test: stage {record.stage_index + 1} {record.stage!r}")
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(True, alpha=0.3)
    figure.savefig(out, format="png", dpi=100)

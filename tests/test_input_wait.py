"""The input wait (tljob.run.input_wait) measured on a real Keras fit under a distribution
strategy, without Ray: a stream slowed by a known delay per batch shows a wait close to it,
a fast in-memory feed almost none; training takes every full per-replica batch of a
worker's rows (at most batch_size - 1 left out); the streamed epochs start only when
training begins them. The summary's section and the CPUs it asks for, by the formula."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf

from tljob.nn.keras import tf_keras
from tljob.run import feed, feed_arrays
from tljob.run.input_clock import InputWaitCallback
from tljob.run.input_wait import input_summary, more_data_cpus, starvation_line

SIZE, BATCH = 8, 4


class SlowShard:
    """A streamed shard: ``rows`` rows, ``delay_s`` before each batch; counts the epochs
    (calls of ``iter_batches``) begun and the rows handed out."""

    def __init__(self, rows: int, delay_s: float) -> None:
        self.rows, self.delay_s = rows, delay_s
        self.epochs_begun = 0

    def iter_batches(self, batch_size, batch_format, drop_last, **_):
        assert batch_format == "numpy" and drop_last
        self.epochs_begun += 1
        for start in range(0, self.rows - batch_size + 1, batch_size):
            time.sleep(self.delay_s)
            labels = np.arange(start, start + batch_size, dtype=np.int64) % 2
            yield {"image": np.zeros((batch_size, SIZE, SIZE, 3), np.uint8), "label": labels}


class MemoryShard(SlowShard):
    def iter_batches(self, batch_size, batch_format, **_):
        for start in range(0, self.rows, batch_size):
            n = min(batch_size, self.rows - start)
            yield {
                "image": np.zeros((n, SIZE, SIZE, 3), np.uint8),
                "label": np.arange(start, start + n, dtype=np.int64) % 2,
            }


def fit_epochs(shard, rows: int, streamed: bool, epochs: int, fits: int = 1) -> list[dict]:
    """Each epoch's input figures of ``fits`` fits of ``epochs`` epochs on a tiny model."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    data = feed.worker_input_per_worker(
        {"train": shard, "val": MemoryShard(8, 0)},
        strategy,
        1,
        train_rows=rows,
        batch_size=BATCH,
        image_size=SIZE,
        shuffle=0,
        seed=0,
        limit_bytes=10**7,
        first_epoch=lambda: 0,
        train_streamed_because="the test streams it" if streamed else None,
    )
    with strategy.scope():
        model = tf_keras.Sequential(
            [tf_keras.layers.Rescaling(1 / 255), tf_keras.layers.Flatten(),
             tf_keras.layers.Dense(2)]
        )  # fmt: skip
        model.compile("sgd", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    figures: list[dict] = []
    record = tf_keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: figures.append(data.clock.epoch_figures())
    )
    for _ in range(fits):
        model.fit(
            data.train,
            validation_data=data.val,
            steps_per_epoch=data.steps_per_epoch,
            epochs=epochs,
            callbacks=[InputWaitCallback(data.clock), record],
            verbose=0,
        )
    time.sleep(0.5)  # anything prefetched past the last epoch would have started by now
    return figures


def test_a_stream_slowed_by_a_known_delay_shows_that_wait_and_starts_no_extra_epoch():
    delay = 0.05
    shard = SlowShard(42, delay)  # 10 full batches of 4, 2 rows left out
    figures = fit_epochs(shard, 42, streamed=True, epochs=2, fits=2)
    assert [(f["steps"], f["images"]) for f in figures] == [(10, 40)] * 4
    # the gate: one epoch of the stream per epoch trained, none begun ahead (a prefetch
    # past a stage's end would start one on some workers only)
    assert shard.epochs_begun == 4
    for f in figures[1:]:  # the first epoch also waits for the first compilation
        # every step waits for its batch: at least the delay less the step's own work (~1
        # ms), more by what the generator costs around it (on a loaded machine, ~10 ms)
        assert 0.8 * delay <= f["input_wait_seconds"] <= f["step_seconds"], f
        assert f["input_wait_ratio"] == pytest.approx(
            f["input_wait_seconds"] / f["step_seconds"], abs=1e-4
        )
        assert 0 < f["input_wait_ratio"] <= 1


def test_a_fast_in_memory_feed_shows_almost_no_wait_and_leaves_out_less_than_a_batch():
    figures = fit_epochs(MemoryShard(37, 0), 37, streamed=False, epochs=3)
    assert [(f["steps"], f["images"]) for f in figures] == [(9, 36)] * 3  # 1 row left out
    for f in figures[1:]:
        assert f["input_wait_seconds"] <= 0.001 and f["input_wait_ratio"] <= 0.1, f


def test_features_in_memory_run_many_steps_a_call_and_still_count_and_validate_every_row():
    # a cached stage's input (arrays_input_per_worker): 67 training rows of 4 = 16 steps,
    # run in calls of up to feed_arrays.ARRAY_STEPS_PER_EXECUTION; 11 validation rows, each once
    rng = np.random.default_rng(0)
    train = (rng.normal(size=(67, 3)).astype(np.float32), rng.integers(0, 2, 67))
    val = (rng.normal(size=(11, 3)).astype(np.float32), rng.integers(0, 2, 11))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    data = feed_arrays.arrays_input_per_worker(train, val, strategy, 1, BATCH, 0, 0, lambda: 0)
    assert (data.steps_per_epoch, data.steps_per_execution, data.validation_steps) == (16, 16, 3)
    with strategy.scope():
        model = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(2)])
        model.compile(
            "sgd",
            tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            steps_per_execution=data.steps_per_execution,
        )
    figures: list[dict] = []
    history = model.fit(
        data.train,
        validation_data=data.val,
        validation_steps=data.validation_steps,
        steps_per_epoch=data.steps_per_epoch,
        epochs=2,
        callbacks=[
            InputWaitCallback(data.clock),
            tf_keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: figures.append(data.clock.epoch_figures())
            ),
        ],
        verbose=0,
    )
    assert [(f["steps"], f["images"]) for f in figures] == [(16, 64)] * 2  # 3 rows left out
    # the batches wait in memory: a call's first step hardly waits (the first epoch's call
    # also traces the step, before it takes a batch)
    assert figures[1]["input_wait_ratio"] <= 0.1, figures
    predicted = model.predict(val[0], verbose=0).argmax(axis=1)
    assert history.history["val_accuracy"][-1] == pytest.approx((predicted == val[1]).mean())


def test_the_cpus_asked_for_make_the_stream_as_fast_as_the_steps():
    # 64 images a step; steps of 100 ms, 40 of them waiting: training would take 1067
    # images/s, the stream gives 640; at 100 images/s per CPU that is 4.27 more CPUs
    assert more_data_cpus(64, 0.1, 0.04, 100.0) == 5
    assert more_data_cpus(64, 0.1, 0.0, 100.0) == 0
    epochs = [
        {"input": {"steps": 10, "step_seconds": 0.1, "input_wait_seconds": 0.04,
                   "input_wait_ratio": 0.4, "streamed": True, "stream_images_per_cpu_s": 100.0}},
        {"input": {"steps": 30, "step_seconds": 0.1, "input_wait_seconds": 0.04,
                   "input_wait_ratio": 0.4, "streamed": True, "stream_images_per_cpu_s": 100.0}},
        {"global_epoch": 3},  # an epoch timed before the input was
    ]  # fmt: skip
    section = input_summary(epochs, images_per_step=64)
    assert section == {
        "streamed": True,
        "epochs": 2,
        "steps": 40,
        "step_seconds": 0.1,
        "input_wait_seconds": 0.04,
        "input_wait_ratio": 0.4,
        "images_per_step": 64,
        "starved": True,
        "stream_images_per_cpu_s": 100.0,
        "more_data_cpus": 5,
    }
    assert starvation_line(section) == (
        "input: the training steps waited for images 40% of their time (40.0 of 100.0 ms a "
        "step); the stream delivers 100 images/s per CPU: about 5 more CPU(s) for Ray Data "
        "(`scaling.data_cpus`, or a larger cluster) would feed it"
    )
    fed = input_summary([{"input": {**epochs[0]["input"], "input_wait_seconds": 0.01}}], 64)
    assert fed["starved"] is False and "more_data_cpus" not in fed
    assert starvation_line(fed) is None
    assert input_summary([{"global_epoch": 1}], 64) is None
    memory = {**epochs[0]["input"], "streamed": False, "stream_images_per_cpu_s": None}
    held = input_summary([{"input": memory}], 64)
    assert (held["streamed"], held["starved"], "more_data_cpus" in held) == (False, True, False)
    assert starvation_line(held).endswith(
        ": the images are served from worker memory, so more Ray Data CPUs would not help"
    )

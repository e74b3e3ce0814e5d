"""``learning_rate: auto`` without Ray: the config's values, the range test's rates, smoothing
and rule on synthetic curves (expected values worked out by hand or from the definitions in
docs/pages/training.md, in plain Python), and the Keras range test putting every weight back
bit for bit on a tiny model.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tljob.config import ConfigError, dump_config, load_config
from tljob.run import lr_curve


def test_auto_is_accepted_and_read_back(tmp_path):
    job = load_config(None, ["data.source=/x", "train.stages.1.learning_rate=auto"])
    assert [s.learning_rate for s in job.train.stages] == [1e-4, "auto"]
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(job))
    assert load_config(str(saved), []).train.stages[1].learning_rate == "auto"


@pytest.mark.parametrize(
    ("value", "shown", "rule"),
    [
        ("0", "0", "must be a positive number or 'auto'"),
        ("-1e-3", "'-1e-3'", "must be a positive number or 'auto'"),
        ("fast", "'fast'", "must be a positive number or 'auto'"),
        ("[auto]", "['auto']", "must be a positive number or 'auto'"),
        (".inf", "inf", "must be a finite number, not inf or nan"),  # as every float field
    ],
)
def test_bad_learning_rates_are_refused(value, shown, rule):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.source=/x", f"train.stages.0.learning_rate={value}"])
    expected = f"invalid config:\n  `train.stages.0.learning_rate` ({shown}): {rule}"
    assert str(err.value) == expected


def test_rates_rise_exponentially_from_1e_7_to_1():
    rates = lr_curve.rates(100)
    assert len(rates) == 100
    assert rates[0] == 1e-7 and math.isclose(rates[-1], 1.0, rel_tol=1e-12)
    ratio = 10 ** (7 / 99)  # the same factor every step
    assert all(
        math.isclose(b / a, ratio, rel_tol=1e-9) for a, b in zip(rates, rates[1:], strict=False)
    )
    steps = [lr_curve.range_test_steps(n, in_memory) for n in (2, 74, 500) for in_memory in (0, 1)]
    assert steps == [2, 20, 74, 74, 100, 100]  # at least 20 steps when the data can cycle


def test_smoothing_is_the_debiased_moving_average():
    # by hand, beta 0.98: a1 = 0.02 * 1 -> 0.02 / 0.02 = 1;
    # a2 = 0.98 * 0.02 + 0.02 * 2 = 0.0596 -> 0.0596 / (1 - 0.9604) = 1.50505...
    smoothed = lr_curve.smooth([1.0, 2.0])
    assert math.isclose(smoothed[0], 1.0, rel_tol=1e-12)
    assert math.isclose(smoothed[1], 0.0596 / 0.0396, rel_tol=1e-12)
    assert lr_curve.diverged([1.0, 2.0, 4.01]) and not lr_curve.diverged([1.0, 2.0, 3.99])
    assert lr_curve.diverged([1.0, math.nan])


def _flat_fall_rise() -> list[float]:
    # 2.0 at steps 0-30, falling by 0.03 a step to 0.8 at step 70, then rising
    return [
        2.0 if i <= 30 else 2.0 - 0.03 * (i - 30) if i <= 70 else 0.8 + 0.1 * (i - 70)
        for i in range(90)
    ]


def test_valley_is_two_thirds_down_the_longest_fall():
    # The longest strictly falling run: one of the 2.0s, then steps 31-70 (41 points). fastai's
    # code ends it at the first step reaching that length (70) and starts it at 70 - 41 = 29;
    # a third of 41 steps is 13.67: 29 + 13 + int(6.83) = 48.
    assert lr_curve.valley_index(_flat_fall_rise()) == 48
    # a fall from step 0: 7 points, ending at 6, starting (fastai's way) at 6 - 7 = -1;
    # 7 / 3 = 2.33: -1 + 2 + int(1.17) = 2
    assert lr_curve.valley_index([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25]) == 2
    # nothing falls: the run is step 0 alone, -1 + 0 + 0 = -1, clamped to the first step
    assert lr_curve.valley_index([1.0, 2.0, 3.0]) == 0


def test_pick_rate_reads_the_window_and_drops_the_diverged_steps():
    rates = lr_curve.rates(100)
    losses = [2.3 + 0.01 * i for i in range(60)] + [math.nan] * 40  # diverged at step 60
    chosen, record = lr_curve.pick_rate(rates, losses)
    # window: the first tenth (6 steps) and the last 5 left out; a rising curve has no fall
    assert record.window == (6, 55) and record.rule == "valley"
    assert chosen == rates[6] and len(record.smoothed) == 60
    # the record's JSON is standard (null for the diverged steps) and reads back equal
    text = json.dumps(record.to_json(), allow_nan=False)
    again = lr_curve.RangeTest.from_json(json.loads(text))
    assert again.losses[:60] == losses[:60] and all(math.isnan(v) for v in again.losses[60:])
    assert (again.chosen, again.window, again.rates) == (chosen, (6, 55), rates)


def test_a_short_curve_gets_minimum_over_ten():
    rates = lr_curve.rates(6)
    losses = [3.0, 2.0, 1.0, 1.5, 4.0, 5.0]
    chosen, record = lr_curve.pick_rate(rates, losses)
    # smoothed (beta 0.98, nearly running means): 3, 2.49, 1.99, 1.86, 2.30, 2.69 -> step 3
    assert chosen == pytest.approx(1e-7 * 10 ** (7 * 3 / 5) / 10, rel=1e-12)
    assert record.rule.startswith("minimum/10") and record.window == (0, 6)
    with pytest.raises(ValueError, match="all non-finite"):
        lr_curve.pick_rate(rates[:2], [math.nan, math.nan])


def test_a_typical_curve_picks_a_rate_on_the_fall_below_the_minimum():
    # flat at 2.3 until 1e-4, falling to 0.3 at 1e-2, diverging beyond 1e-1
    rates = lr_curve.rates(100)
    log = [math.log10(r) for r in rates]
    losses = [
        2.3 if x < -4 else 2.3 - (x + 4) if x < -2 else 0.3 if x < -1 else 0.3 + 10 * (x + 1)
        for x in log
    ]
    chosen, record = lr_curve.pick_rate(rates, losses)
    assert 1e-4 < chosen < 1e-2 and chosen < 10 * record.minimum_over_10
    assert record.minimum_over_10 > 1e-3  # the minimum lies beyond 1e-2, lagged by smoothing


def _tiny_model(width: int = 8) -> tf_keras.Model:
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((width,))
    hidden = tf_keras.layers.Dense(16, activation="relu")(inputs)
    hidden = tf_keras.layers.BatchNormalization()(hidden)  # statistics move in training
    hidden = tf_keras.layers.Dropout(0.2)(hidden)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(3, activation="softmax")(hidden))


def _data(rows: int = 320, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(rows, 8)) * scale).astype("float32")
    return x, (np.argmax(x[:, :3], axis=1)).astype("int64")


def test_the_range_test_puts_every_weight_back_bit_for_bit():
    from tljob.nn import lr_find
    from tljob.nn import model as nn_model

    net = _tiny_model()
    x, y = _data()
    stage = load_config(None, ["data.source=/x", "train.stages.0.learning_rate=auto"])
    stage = stage.train.stages[0]
    nn_model.compile_for_stage(net, "adam", 1e-3)  # an optimizer with state of its own
    net.fit(x, y, batch_size=32, epochs=1, verbose=0)
    before = [w.copy() for w in net.get_weights()]
    optimizer = net.optimizer
    optimizer_before = [v.numpy().copy() for v in optimizer.variables]
    endless = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
    record = lr_find.range_test(net, stage, endless, 10, endless=True)
    assert len(record.losses) == 10 and record.rates == lr_curve.rates(10)
    after = net.get_weights()
    assert len(after) == len(before)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert net.optimizer is not optimizer  # the test had its own; the old one never stepped
    assert all(
        np.array_equal(v.numpy(), a)
        for v, a in zip(optimizer.variables, optimizer_before, strict=True)
    )


def test_a_stream_is_read_to_its_end_and_divergence_stops_the_curve():
    from tljob.nn import lr_find

    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8,))
    net = tf_keras.Model(inputs, tf_keras.layers.Dense(3, activation="softmax")(inputs))
    x, y = _data(scale=1000.0)  # huge inputs: plain SGD's loss explodes at high rates
    read: list[int] = []

    def batches():
        for start in range(0, len(y), 16):
            read.append(start)
            yield x[start : start + 16], y[start : start + 16]

    spec = (tf.TensorSpec((None, 8), tf.float32), tf.TensorSpec((None,), tf.int64))
    stream = tf.data.Dataset.from_generator(batches, output_signature=spec)
    overrides = ["train.stages.0.learning_rate=auto", "train.stages.0.optimizer=sgd"]
    stage = load_config(None, ["data.source=/x", *overrides])
    before = [w.copy() for w in net.get_weights()]
    record = lr_find.range_test(net, stage.train.stages[0], stream, 12, endless=False)
    assert len(read) == 20  # all 20 batches of the epoch read, though 12 at most trained
    assert record.stopped_early and len(record.losses) < 12
    assert all(np.array_equal(a, b) for a, b in zip(before, net.get_weights(), strict=True))


def test_a_sweep_over_auto_and_numbers_plots_by_trial():
    from tljob.tune.outputs import _lr_path
    from tljob.tune.results import TrialRecord

    path = "train.stages.0.learning_rate"  # a sweep may list `auto` (test_sweep_config)
    numbers = [TrialRecord("a", "TERMINATED", {path: 1e-3}), TrialRecord("b", "TERMINATED")]
    assert _lr_path([path], numbers) == path
    with_auto = [*numbers, TrialRecord("c", "TERMINATED", {path: "auto"})]
    assert _lr_path([path], with_auto) is None  # no rate to put on a log axis

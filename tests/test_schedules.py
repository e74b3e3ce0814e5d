"""Per-stage optimisation without Ray: optimizers and their settings, the learning rate at
every step of each schedule kind (also through real training steps and a resume), label
smoothing, macro-F1 / per-class recall, balanced class weights, precision and XLA, and the
per-stage BatchNorm switch.

Expected values are computed here, in plain Python / numpy / scikit-learn, from the
definitions in docs/pages/training.md, never from tljob's own code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tljob.config import ConfigError, balanced_class_weights, load_config
from tljob.nn import metrics as nn_metrics
from tljob.nn import model as nn_model
from tljob.nn import schedules as nn_schedules

TINY = 32
SPE = 5  # steps per epoch in the schedule tests
# the XLA-compiled bfloat16 step: AlexNet (5 convolutions) compiles in a fraction of VGG16's 22 s
ALEXNET_MIN = 63


def stage(*overrides: str, epochs: int = 4, lr: float = 0.1):
    job = load_config(
        None,
        [
            "data.source=x",
            f"train.stages=[{{name: s, epochs: {epochs}, learning_rate: {lr}}}]",
            *(f"train.stages.0.{o}" for o in overrides),
        ],
    )
    return job.train.stages[0]


def expected_rate(kind: str, s: int, *, lr=0.1, epochs=4, warmup=0, every=1, factor=0.1, f=0.0):
    """The docs' definitions (docs/pages/training.md), in plain Python floats."""
    if kind in ("constant", "plateau"):
        rate = lr
    elif kind == "step":
        rate = lr * factor ** (s // (every * SPE))
    else:  # cosine
        span = max(1, epochs * SPE - warmup)
        progress = min(1.0, max(0.0, (s - warmup) / span))
        rate = lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * progress)))
    if warmup:
        rate *= min(1.0, (s + 1) / warmup)
    return rate


@pytest.fixture(scope="module")
def tiny():
    from tljob.nn.model import build_model

    job = load_config(
        None,
        [
            "data.source=x",
            "model.backbone=vgg16",
            "model.weights=none",
            "data.image_size=32",
            "model.head.dropout=0",  # the tape and the step see the same network
        ],
    )
    net = build_model(job.model, num_classes=3, image_size=TINY)
    yield net
    tf_keras.backend.clear_session()


def rates_at(net, stage_cfg, steps):
    """The compiled optimizer's rate at the given iterations (its own step counter)."""
    nn_model.set_trainable(net, stage_cfg.trainable)
    schedule = nn_model.compile_stage(net, stage_cfg, SPE)
    optimizer = nn_schedules.inner_optimizer(net)
    optimizer.build(net.trainable_variables)
    out = []
    for s in steps:
        optimizer.iterations.assign(s)
        out.append(float(optimizer._learning_rate(optimizer.iterations)))
        assert nn_model.current_learning_rate(net) == out[-1]
    return schedule, out


STEPS = list(range(0, 4 * SPE + 3))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["schedule.kind=constant"], dict(kind="constant")),
        (["schedule.kind=plateau"], dict(kind="plateau")),
        (["schedule.kind=cosine"], dict(kind="cosine")),
        (
            ["schedule.kind=cosine", "schedule.final_fraction=0.2", "schedule.warmup_steps=3"],
            dict(kind="cosine", f=0.2, warmup=3),
        ),
        (["schedule.kind=step"], dict(kind="step")),
        (
            ["schedule.kind=step", "schedule.step_epochs=2", "schedule.step_factor=0.5"],
            dict(kind="step", every=2, factor=0.5),
        ),
        (
            ["schedule.kind=constant", "schedule.warmup_epochs=1"],
            dict(kind="constant", warmup=SPE),
        ),
        (
            ["schedule.kind=step", "schedule.warmup_steps=7", "schedule.step_factor=0.5"],
            dict(kind="step", warmup=7, factor=0.5),
        ),
        (
            ["schedule.kind=plateau", "schedule.warmup_epochs=2"],
            dict(kind="plateau", warmup=2 * SPE),
        ),
    ],
)
def test_each_schedule_gives_the_intended_rate_at_every_step(tiny, overrides, expected):
    _, got = rates_at(tiny, stage(*overrides), STEPS)
    want = [expected_rate(s=s, **expected) for s in STEPS]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_spot_values_of_the_schedules(tiny):
    # a few values worked out by hand, as a check on the reference formula itself
    _, cosine = rates_at(tiny, stage("schedule.kind=cosine", epochs=2), [0, 5, 10])
    np.testing.assert_allclose(cosine, [0.1, 0.05, 0.0], atol=1e-7)
    _, step = rates_at(tiny, stage("schedule.kind=step", epochs=3), [4, 5, 10])
    np.testing.assert_allclose(step, [0.1, 0.01, 0.001], rtol=1e-6)
    _, warm = rates_at(tiny, stage("schedule.kind=constant", "schedule.warmup_steps=4"), [0, 1, 3])
    np.testing.assert_allclose(warm, [0.025, 0.05, 0.1], rtol=1e-6)


def test_training_steps_use_the_scheduled_rates_and_a_resume_continues_them(tiny):
    # Plain SGD without momentum: each step moves the classifier bias by exactly
    # -rate * gradient, so the rate each real step used can be read back from the weights.
    cfg = stage(
        "schedule.kind=cosine",
        "schedule.warmup_steps=2",
        "optimizer=sgd",
        "momentum=0.0",
        epochs=2,
    )
    nn_model.set_trainable(tiny, cfg.trainable)
    nn_model.compile_stage(tiny, cfg, SPE)
    tiny.run_eagerly = True
    x = np.random.default_rng(0).integers(0, 256, (4, TINY, TINY, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 0])
    bias = tiny.get_layer("classifier").bias

    def step_rate() -> float:
        with tf.GradientTape() as tape:
            loss = tiny.compiled_loss(tf.constant(y), tiny(x, training=True))
        grad = tape.gradient(loss, bias).numpy()
        before = bias.numpy().copy()
        tiny.train_on_batch(x, y)
        return float(np.mean((before - bias.numpy()) / grad))

    used = [step_rate() for _ in range(3)]
    np.testing.assert_allclose(
        used, [expected_rate("cosine", s, epochs=2, warmup=2) for s in range(3)], rtol=1e-3
    )
    # a resumed stage: a fresh compile, the optimizer moved to where the stage left off
    nn_model.compile_stage(tiny, cfg, SPE)
    tiny.run_eagerly = True
    nn_schedules.start_at_step(tiny, 7)
    assert nn_model.current_learning_rate(tiny) == pytest.approx(
        expected_rate("cosine", 7, epochs=2, warmup=2), rel=1e-6
    )
    assert step_rate() == pytest.approx(expected_rate("cosine", 7, epochs=2, warmup=2), rel=1e-3)


def test_plateau_level_moves_with_reduce_lr_and_warmup_scales_it(tiny):
    from tljob.config import ReduceLRSection
    from tljob.nn.callbacks import ResumableReduceLROnPlateau

    cfg = stage("schedule.kind=plateau", "schedule.warmup_steps=10")
    schedule, _ = rates_at(tiny, cfg, [0])
    settings = ReduceLRSection(monitor="val_macro_f1", factor=0.5, patience=1)
    callback = ResumableReduceLROnPlateau(schedule, settings)
    callback.set_model(tiny)
    callback.on_train_begin()
    for f1 in (0.5, 0.6, 0.6, 0.55):  # higher is better for macro-F1: two epochs stall
        callback.on_epoch_end(0, {"val_macro_f1": f1})
    assert float(schedule.level.numpy()) == pytest.approx(0.1 * 0.5 * 0.5)
    optimizer = nn_schedules.inner_optimizer(tiny)
    optimizer.iterations.assign(4)
    assert nn_model.current_learning_rate(tiny) == pytest.approx(0.025 * 5 / 10)
    nn_model.set_learning_rate(tiny, 0.2)  # a resume restores the level
    assert nn_model.current_learning_rate(tiny) == pytest.approx(0.2 * 5 / 10)
    assert callback.state() == {"wait": 0.0, "best": 0.6, "cooldown_counter": 0.0}


@pytest.mark.parametrize(
    ("overrides", "cls", "params"),
    [
        ([], "Adam", {}),
        (["optimizer=adamw", "weight_decay=0.03"], "AdamW", {"weight_decay": 0.03}),
        (["optimizer=sgd"], "SGD", {"momentum": 0.9}),
        (["optimizer=sgd", "momentum=0.5"], "SGD", {"momentum": 0.5}),
        (["optimizer=rmsprop"], "RMSprop", {"momentum": 0.0}),
        (["optimizer=rmsprop", "momentum=0.3"], "RMSprop", {"momentum": 0.3}),
    ],
)
def test_optimizers_are_built_as_configured(tiny, overrides, cls, params):
    cfg = stage(*overrides)
    nn_model.compile_stage(tiny, cfg, SPE)
    optimizer = nn_schedules.inner_optimizer(tiny)
    assert type(optimizer) is getattr(tf_keras.optimizers, cls)
    config = optimizer.get_config()
    for key, value in params.items():
        assert config[key] == pytest.approx(value)
    assert isinstance(optimizer._learning_rate, nn_schedules.StageSchedule)


def test_label_smoothing_loss_equals_the_formula(tiny):
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]], np.float32)
    labels = np.array([0, 2, 0])
    eps, k = 0.1, 3
    targets = np.eye(k)[labels] * (1 - eps) + eps / k
    want = float(np.mean(-(targets * np.log(probs)).sum(axis=1)))
    loss = nn_metrics.SmoothedSparseCrossentropy(k, eps)
    assert float(loss(labels, probs)) == pytest.approx(want, rel=1e-6)
    # and the compiled model reports it: evaluate on a model whose output is `probs`
    cfg = stage(f"label_smoothing={eps}")
    nn_model.compile_stage(tiny, cfg, SPE)
    assert isinstance(tiny.loss, nn_metrics.SmoothedSparseCrossentropy)
    assert tiny.loss.label_smoothing == eps
    plain = stage()
    nn_model.compile_stage(tiny, plain, SPE)
    assert tiny.loss == "sparse_categorical_crossentropy"


def test_macro_f1_and_recall_equal_scikit_learn():
    from sklearn.metrics import f1_score, recall_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 200)
    labels[labels == 3] = 2  # class 3 never occurs: its recall and F1 are 0
    probs = rng.dirichlet(np.ones(4), 200).astype(np.float32)
    probs[np.arange(0, 200, 3), labels[::3]] += 2.0  # better than chance
    metric = nn_metrics.ClassMetrics(4)
    for part in np.array_split(np.arange(200), 7):  # several batches accumulate
        metric.update_state(labels[part], probs[part])
    result = {k: v.numpy() for k, v in metric.result().items()}
    predicted = probs.argmax(axis=1)
    args = dict(labels=range(4), zero_division=0)
    assert result["macro_f1"] == pytest.approx(
        f1_score(labels, predicted, average="macro", **args), rel=1e-6
    )
    np.testing.assert_allclose(
        result["class_recall"], recall_score(labels, predicted, average=None, **args), rtol=1e-6
    )
    metric.reset_state()
    assert float(metric.result()["macro_f1"]) == 0.0


REPLICAS = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tljob.nn.metrics import ClassMetrics
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
labels = np.array([0, 0, 1, 1, 2, 2, 0, 1], np.int32)
probs = np.eye(3, dtype=np.float32)[[0, 1, 1, 1, 2, 0, 0, 2]]
with strategy.scope():
    metric = ClassMetrics(3)
def part(ctx):
    i = ctx.replica_id_in_sync_group
    return labels[i * 4 : i * 4 + 4], probs[i * 4 : i * 4 + 4]
values = strategy.experimental_distribute_values_from_function(part)
strategy.run(lambda v: metric.update_state(*v), args=(values,))
print(repr(metric.result()["class_recall"].numpy().tolist()))
"""


def test_class_metrics_sum_over_replicas():
    # Two replicas in one process (a fresh one: logical CPUs are fixed at TF start-up),
    # each seeing half the rows; the result must cover all of them.
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", REPLICAS], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recall = eval(proc.stdout.strip().splitlines()[-1])
    # class 0: 3 rows, 2 hits; class 1: 3 rows, 2 hits; class 2: 2 rows, 1 hit
    np.testing.assert_allclose(recall, [2 / 3, 2 / 3, 1 / 2], rtol=1e-6)


def test_balanced_class_weights_on_a_skewed_set():
    counts = [90, 9, 1]  # 100 images, 3 classes
    assert balanced_class_weights(counts) == {
        0: 100 / (3 * 90),
        1: 100 / (3 * 9),
        2: 100 / (3 * 1),
    }
    assert balanced_class_weights([5, 0, 5]) == {0: 10 / 15, 1: 0.0, 2: 10 / 15}
    # scikit-learn's definition of 'balanced'
    from sklearn.utils.class_weight import compute_class_weight

    y = np.repeat([0, 1, 2], counts)
    np.testing.assert_allclose(
        list(balanced_class_weights(counts).values()),
        compute_class_weight("balanced", classes=np.arange(3), y=y),
    )


def test_mixed_bfloat16_trains_a_step_with_a_float32_softmax():
    from tljob.nn.model import build_model

    job = load_config(
        None,
        [
            "data.source=x",
            "model.backbone=alexnet",
            "model.weights=none",
            f"data.image_size={ALEXNET_MIN}",
            "train.precision=mixed_bfloat16",
            "train.jit_compile=true",
        ],
    )
    try:
        nn_model.set_precision(job.train.precision)
        net = build_model(job.model, num_classes=3, image_size=ALEXNET_MIN)
        assert nn_model.backbone_of(net).layers[1].compute_dtype == "bfloat16"
        nn_model.compile_stage(net, job.train.stages[0], SPE, jit_compile=job.train.jit_compile)
        x = np.random.default_rng(0).integers(
            0, 256, (4, ALEXNET_MIN, ALEXNET_MIN, 3), dtype=np.uint8
        )
        before = net.get_layer("classifier").kernel.numpy().copy()
        logs = net.train_on_batch(x, np.array([0, 1, 2, 0]), return_dict=True)
        assert np.isfinite(logs["loss"])
        assert not np.array_equal(before, net.get_layer("classifier").kernel.numpy())
        assert net.get_layer("classifier").kernel.dtype == tf.float32
        assert net(x).dtype == tf.float32
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def test_mixed_float16_without_a_gpu_is_refused_naming_field_and_value():
    assert not tf.config.list_physical_devices("GPU")
    with pytest.raises(nn_model.PrecisionError) as err:
        nn_model.set_precision("mixed_float16")
    assert str(err.value).startswith("`train.precision` ('mixed_float16') needs a GPU")
    assert tf_keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.source=x", "train.precision=mixed_float16"])
    assert "`train.precision` ('mixed_float16') needs GPUs (`scaling.use_gpu: true`)" in str(
        err.value
    )
    job = load_config(None, ["train.precision=mixed_float16", "scaling.use_gpu=true"])
    assert job.train.precision == "mixed_float16"

"""Backbone registry, model assembly, freezing, BatchNorm mode, resizing and export.

The models here are built once per session at 32 px (``tiny_model``); every registered
backbone is built and trained for one step in ``test_zoo.py``. Tracing a backbone's
training step into a graph costs 5 to 10 s (the optimizer update of every variable), so
one-step checks of what the model computes run eagerly (``run_eagerly``: the same layers,
gradients and updates, without the tracing), and one test trains through the compiled
graph, as the workers do. Tests that share a model set what they depend on (trainable
flags, compilation) themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tljob.config import Trainable, load_config
from tljob.images import resize_bilinear_uint8
from tljob.nn import callbacks as nn_callbacks
from tljob.nn import io as nn_io
from tljob.nn import layers as nn_layers
from tljob.nn import model as nn_model
from tljob.zoo import (
    BACKBONES,
    UnknownBackboneError,
    WeightsSource,
    WeightsUnavailableError,
    get_backbone,
    resolve_weights_file,
)

TINY = 32  # every registered backbone's min_image_size (checked by tiny_model)


def model_cfg(backbone: str = "mobilenet_v2", weights: str = "none", *extra: str):
    return load_config(
        None,
        [
            "data.source=x",
            f"model.backbone={backbone}",
            f"model.weights={weights}",
            f"data.image_size={TINY}",
            *extra,
        ],
    ).model


def batch(n: int = 4, size: int = TINY, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 3, (n,)))


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(name)``: the model for 3 classes on backbone ``name`` with random
    weights at the backbone's smallest input size, built once per session."""
    built: dict[str, tf_keras.Model] = {}

    def get(name: str) -> tf_keras.Model:
        if name not in built:
            assert BACKBONES[name].min_image_size == TINY, "TINY must follow the registry"
            built[name] = nn_model.build_model(model_cfg(name), num_classes=3, image_size=TINY)
        return built[name]

    yield get
    built.clear()
    tf_keras.backend.clear_session()


def train_one_step(net, optimizer: str = "adam", n: int = 4, seed: int = 0):
    """Unfreeze everything, compile, and train one eager step on ``n`` random images."""
    nn_model.set_trainable(net, Trainable.parse("all"))
    nn_model.compile_for_stage(net, optimizer, 1e-3 if optimizer == "adam" else 0.1)
    net.run_eagerly = True  # compile_for_stage resets it; graph tracing is the slow part
    x, y = batch(n, seed=seed)
    return net.fit(x, y, batch_size=n, epochs=1, verbose=0)


def test_fit_reports_exactly_the_metrics_callbacks_may_monitor(tiny_model):
    # The config validates `monitor` settings against REPORTED_METRICS; this keeps that
    # tuple equal to what a compiled model really reports when it validates every epoch.
    # It is also the test that trains through the traced graph, as the workers do.
    from tljob.config import REPORTED_METRICS

    net = tiny_model("mobilenet_v2")
    nn_model.set_trainable(net, Trainable.parse("head"))
    nn_model.compile_for_stage(net, "adam", 1e-3)
    assert not net.run_eagerly
    x, y = batch()
    seen: list[tuple[str, ...]] = []
    hooks = nn_callbacks.EpochHooks(lambda e, m: None, lambda e, logs, m: seen.append(tuple(logs)))
    history = net.fit(
        x, y, batch_size=4, epochs=1, validation_data=(x, y), callbacks=[hooks], verbose=0
    )
    per_class = ("class_recall", "val_class_recall")
    assert [tuple(k for k in keys if k not in per_class) for keys in seen] == [REPORTED_METRICS]
    assert set(seen[0]) - set(REPORTED_METRICS) == set(per_class)
    assert tuple(k for k in history.history if k not in per_class) == REPORTED_METRICS
    assert np.shape(history.history["val_class_recall"][0]) == (3,)


def test_unknown_backbone_names_its_close_matches():
    with pytest.raises(UnknownBackboneError) as err:
        get_backbone("alexnet9")
    assert str(err.value) == (
        "unknown backbone 'alexnet9'; did you mean 'alexnet'? "
        f"`tljob backbones` lists the {len(BACKBONES)} registered backbones"
    )


def test_imagenet_offline_names_the_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("TLJOB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_weights_file(get_backbone("resnet50"), WeightsSource("imagenet"), 224)
    expected = (
        tmp_path / "keras" / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    assert f"not in the Keras cache: {expected} (cache dir {expected.parent};" in str(err.value)
    assert "offline mode is on" in str(err.value)
    # once the file is there, it is used (no download is attempted either way)
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"x")
    assert resolve_weights_file(get_backbone("resnet50"), WeightsSource("imagenet"), 224) == str(
        expected
    )


@pytest.mark.parametrize(
    ("name", "size", "fname"),
    [
        ("mobilenet_v2", 160, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5"),
        ("mobilenet_v2", 100, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
        ("efficientnet_b0", 224, "efficientnetb0_notop.h5"),
        ("vgg16", 224, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("efficientnet_v2_s", 384, "efficientnetv2-s_notop.h5"),
        ("convnext_tiny", 224, "convnext_tiny_notop.h5"),
        ("nasnet_mobile", 224, "nasnet_mobile_no_top.h5"),
        ("mobilenet_v3_small", 224, "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    ],
)
def test_imagenet_cache_file_names(name, size, fname):
    assert get_backbone(name).imagenet_weights_file(size) == fname


def test_imagenet_sources_are_the_keras_applications_own():
    # URLs and hashes as tf_keras.applications publishes them: md5 for most, sha256 for
    # ConvNeXt, none for MobileNetV2
    efficientnet = get_backbone("efficientnet_b0").imagenet_weights(224)
    assert (
        efficientnet.url
        == "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5"
    )
    assert (efficientnet.hash_algorithm, efficientnet.md5) == (
        "md5",
        "50bc09e76180e00e4465e1a485ddc09d",
    )
    nasnet = get_backbone("nasnet_mobile").imagenet_weights(224)
    assert nasnet.url == (
        "https://storage.googleapis.com/tensorflow/keras-applications/nasnet/"
        "NASNet-mobile-no-top.h5"
    )
    convnext = get_backbone("convnext_base").imagenet_weights(224)
    assert convnext.hash_algorithm == "sha256" and convnext.published_hash == (
        "40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45"
    )
    assert get_backbone("mobilenet_v2").imagenet_weights(160).hash_algorithm == ""
    # every published file has a hash, except MobileNetV2's
    unhashed = {
        spec.name
        for spec in BACKBONES.values()
        for weights in spec.imagenet
        if not weights.hash_algorithm
    }
    assert unhashed == {"mobilenet_v2"}


def test_alexnet_has_no_imagenet_weights(tmp_path):
    from tljob.zoo import NoImageNetWeightsError

    with pytest.raises(NoImageNetWeightsError) as err:
        resolve_weights_file(get_backbone("alexnet"), WeightsSource("imagenet"), 224)
    assert str(err.value) == (
        "`model.weights` ('imagenet'): backbone 'alexnet' has no published ImageNet "
        "weights; set `model.weights` to 'none' (random initialisation) or to a .h5 / "
        ".weights.h5 weights file"
    )


def test_weights_path_must_exist(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        resolve_weights_file(
            get_backbone("vgg16"), WeightsSource.parse(str(tmp_path / "w.h5")), TINY
        )


def _expected_trainable(net, spec: str) -> int:
    backbone = nn_model.backbone_of(net)
    head = 2  # classifier kernel + bias (no hidden layers, dropout has no weights)
    if spec == "head":
        return head
    layers = backbone.layers if spec == "all" else backbone.layers[-int(spec.split(":")[1]) :]
    return head + sum(len(layer.trainable_weights) for layer in layers)


@pytest.mark.parametrize("spec", ["head", "top:1", "top:12", "top_layers:12", "all"])
def test_trainable_counts_per_stage(spec, tiny_model):
    net = tiny_model("mobilenet_v2")
    count = nn_model.set_trainable(net, Trainable.parse(spec))
    assert count == len(net.trainable_weights) == _expected_trainable(net, spec)


def test_trainable_counts_exact_for_mobilenet_v2(tiny_model):
    net = tiny_model("mobilenet_v2")
    # MobileNetV2's last layers: Conv_1 (kernel), Conv_1_bn (gamma, beta), out_relu (none)
    assert [
        nn_model.set_trainable(net, Trainable.parse(s))
        for s in ("head", "top:3", "top_layers:3", "all", "top_layers:1000")
    ] == [2, 5, 5, 158, 158]
    # a hidden head layer adds its kernel and bias (vgg16: the quickest backbone to build)
    hidden = nn_model.build_model(
        model_cfg("vgg16", "none", "model.head.dense_units=[16]"), 3, TINY
    )
    assert nn_model.set_trainable(hidden, Trainable.parse("head")) == 4


def _bn_layers(net):
    return [
        layer
        for layer in nn_model.backbone_of(net).layers
        if isinstance(layer, tf_keras.layers.BatchNormalization)
    ]


def test_batchnorm_stays_in_inference_mode_with_pretrained_weights(tmp_path, tiny_model):
    # "Pretrained" weights from a file: any weights file makes tljob treat BN as frozen.
    # The file is the shared model's backbone: the same architecture build_backbone makes.
    source = nn_model.backbone_of(tiny_model("mobilenet_v2"))
    x, _ = batch(16, seed=5)
    for _ in range(3):  # give the moving statistics real values, as pretraining would
        source(tf.cast(x, tf.float32) / 127.5 - 1, training=True)
    weights_file = tmp_path / "backbone.h5"
    source.save_weights(str(weights_file))
    net = nn_model.build_model(model_cfg("mobilenet_v2", str(weights_file)), 3, TINY)
    bn = _bn_layers(net)
    moving_before = [layer.moving_mean.numpy().copy() for layer in bn]
    gamma_before = [layer.gamma.numpy().copy() for layer in bn]
    assert any(np.any(a != 0) for a in moving_before)  # the file's statistics were loaded
    train_one_step(net, "sgd", n=8)
    # moving statistics untouched: the layers ran in inference mode while training
    assert all(
        np.array_equal(a, layer.moving_mean.numpy())
        for a, layer in zip(moving_before, bn, strict=True)
    )
    # ...yet the layers were trainable: their scale parameters did move
    assert any(
        not np.array_equal(a, layer.gamma.numpy())
        for a, layer in zip(gamma_before, bn, strict=True)
    )


def test_batchnorm_mode_switches_per_stage_on_the_same_weights(tmp_path, tiny_model):
    source = nn_model.backbone_of(tiny_model("mobilenet_v2"))
    weights_file = tmp_path / "backbone.h5"
    source.save_weights(str(weights_file))
    cfg = model_cfg("mobilenet_v2", str(weights_file))
    net = nn_model.build_model(cfg, 3, TINY)
    stage = load_config(None, ["data.source=x"]).train.stages[0]
    assert stage.batchnorm == "auto" and not nn_model.batchnorm_trains(cfg, stage)
    assert nn_model.batchnorm_trains(cfg, stage.model_copy(update={"batchnorm": "train"}))
    assert nn_model.batchnorm_trains(model_cfg(), stage)  # auto, random weights: trains
    trains = nn_model.with_batchnorm(net, True)
    # the same variables, in the same order: checkpoints and the plain copy still fit
    assert [id(v) for v in trains.weights] == [id(v) for v in net.weights]
    bn = _bn_layers(net)

    def moving():
        return [layer.moving_mean.numpy().copy() for layer in bn]

    before = moving()
    train_one_step(trains, "sgd", n=8)  # BatchNorm in training mode: statistics move
    after_train = moving()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after_train, strict=True))
    frozen = nn_model.with_batchnorm(trains, False)
    train_one_step(frozen, "sgd", n=8)  # inference mode again: statistics stay
    assert all(np.array_equal(a, b) for a, b in zip(after_train, moving(), strict=True))
    x, _ = batch()
    # called eagerly, op by op: compiled predict functions may fuse layers differently
    # (oneDNN), which moved outputs by up to 2e-3 on a loaded machine
    np.testing.assert_allclose(
        frozen(x, training=False).numpy(), net(x, training=False).numpy(), rtol=1e-5, atol=1e-6
    )


def test_batchnorm_trains_from_random_weights(tiny_model):
    net = tiny_model("mobilenet_v2")
    bn = _bn_layers(net)
    assert {layer.momentum for layer in bn} == {nn_model.SCRATCH_BATCHNORM_MOMENTUM}
    moving_before = [layer.moving_mean.numpy().copy() for layer in bn]
    train_one_step(net, "sgd", n=8)
    assert any(
        not np.array_equal(a, layer.moving_mean.numpy())
        for a, layer in zip(moving_before, bn, strict=True)
    )


@pytest.mark.parametrize(
    ("h", "w", "size"),
    [(8, 8, 32), (28, 28, 96), (100, 37, 64), (300, 200, 224), (5, 9, 32), (64, 64, 64)],
)
def test_pipeline_resize_equals_model_resize_exactly(h, w, size):
    image = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    in_model = nn_layers.ResizeImages(size)(image[None]).numpy()[0]
    assert np.array_equal(resize_bilinear_uint8(image, size), in_model.astype(np.uint8))


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("caffe", tf_keras.applications.resnet50.preprocess_input),
        ("tf", tf_keras.applications.mobilenet_v2.preprocess_input),
        ("torch", tf_keras.applications.densenet.preprocess_input),
    ],
)
def test_backbone_preprocessing_matches_keras(mode, reference):
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    ours = nn_layers.BackbonePreprocess(mode)(tf.constant(x)).numpy()
    np.testing.assert_allclose(ours, reference(x.copy()), rtol=1e-5, atol=1e-4)


def test_exported_model_reloads_and_takes_any_size(tmp_path, tiny_model):
    net = tiny_model("mobilenet_v2")
    path = tmp_path / "model.keras"
    nn_io.export_model(net, path)
    loaded = nn_io.load_exported(path)
    small = np.random.default_rng(3).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    big = np.random.default_rng(4).integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)
    for images in (small, big):
        resized = np.stack([resize_bilinear_uint8(i, TINY) for i in images])
        # the reference is an eager call: a graph for each batch shape would cost 1 s. Eager
        # and graph kernels sum in different orders (oneDNN): float32 agrees to ~1e-5 (CI
        # saw 5.6e-6 on a probability of 0.39)
        reference = net(resized, training=False).numpy()
        np.testing.assert_allclose(loaded.predict_on_batch(images), reference, rtol=1e-4, atol=1e-5)
    assert loaded.input.dtype == tf.uint8
    # a client's empty request gets an empty answer, as a replica's empty share does
    assert isinstance(loaded, nn_layers.ImageClassifier)
    assert loaded(small[:0]).shape == (0, 3)


def test_weight_files_of_runs_from_before_the_empty_batch_guard_still_load(tmp_path, tiny_model):
    # their checkpoints were written through a plain functional model of the same layers;
    # wrapping the whole model (not the backbone) keeps every weight's path in the file
    net = tiny_model("mobilenet_v2")
    before = nn_io.plain_copy(net)
    before = tf_keras.Model(before.inputs, before.outputs, name=before.name)
    assert not isinstance(before, nn_layers.ImageClassifier)
    marked = [np.full(w.shape, i, w.dtype) for i, w in enumerate(net.get_weights())]
    nn_io.save_weights(before, marked, tmp_path / "old.weights.h5")
    loaded = nn_io.load_weights(nn_io.plain_copy(net), tmp_path / "old.weights.h5")
    assert len(loaded) == len(marked)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, marked, strict=True))

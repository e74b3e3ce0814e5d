"""``augment.where: model``: the Keras layers built from the section (factors as mapped
from ImageDataGenerator's options, seeds), what they do in training, and that inference and
the exported model are exactly the model without them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tf_keras.preprocessing.image import ImageDataGenerator

from tljob.config import StageSection, Trainable, load_config
from tljob.nn import augment_layers
from tljob.nn import io as nn_io
from tljob.nn import model as nn_model
from tljob.nn.layers import RandomBrightnessScale

SIZE = 32  # mobilenet_v2's smallest input


def job(*options: str):
    return load_config(
        None,
        [
            "data.source=x",
            "model.backbone=mobilenet_v2",
            "model.weights=none",
            f"data.image_size={SIZE}",
            "data.seed=11",
            "augment.where=model",
            *options,
        ],
    )


def images(n: int = 8, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_layers_map_image_data_generator_options_exactly():
    section = job(
        "augment.rotation_range=36",
        "augment.width_shift_range=0.25",
        "augment.height_shift_range=8",  # pixels: 8 / 32
        "augment.zoom_range=[0.5, 1.75]",
        "augment.horizontal_flip=true",
        "augment.vertical_flip=true",
        "augment.fill_mode=constant",
        "augment.cval=7",
        "augment.brightness_range=[0.5, 1.5]",
        "augment.color_jitter.contrast=1.5",
    ).augment
    stack = augment_layers.training_augmentation(section, SIZE, default_seed=11)
    configs = {layer.name: layer.get_config() for layer in stack.layers}
    assert list(configs) == [
        "augment_rotation",
        "augment_translation",
        "augment_zoom",
        "augment_flip",
        "augment_brightness_scale",
        "augment_contrast",
    ]
    fill = {"fill_mode": "constant", "fill_value": 7.0}
    assert configs["augment_rotation"]["factor"] == 0.1  # 36 degrees of 360
    assert configs["augment_translation"]["height_factor"] == 0.25
    assert configs["augment_translation"]["width_factor"] == 0.25
    # zoom z drawn from [0.5, 1.75] = 1 + factor: factors (-0.5, 0.75) for both axes
    assert configs["augment_zoom"]["height_factor"] == (-0.5, 0.75)
    assert configs["augment_zoom"]["width_factor"] == (-0.5, 0.75)
    for name in ("augment_rotation", "augment_translation", "augment_zoom"):
        assert {k: configs[name][k] for k in fill} == fill
    assert configs["augment_flip"]["mode"] == "horizontal_and_vertical"
    brightness = configs["augment_brightness_scale"]
    assert (brightness["lower"], brightness["upper"]) == (0.5, 1.5)
    assert configs["augment_contrast"]["factor"] == (1.0, 1.5)  # [max(0, 1 - c), 1 + c]
    # seeded from data.seed (augment.seed empty), one seed per layer
    assert [c["seed"] for c in configs.values()] == [11, 12, 13, 14, 15, 16]
    assert {c["dtype"] for c in configs.values()} == {"float32"}
    seeded = augment_layers.training_augmentation(
        section.model_copy(update={"seed": 100}), SIZE, default_seed=11
    )
    assert [layer.get_config()["seed"] for layer in seeded.layers] == list(range(100, 106))


def test_the_preset_seed_would_need_shear_which_the_model_cannot_do():
    with pytest.raises(
        ValueError, match=r"`augment.shear_range` \(0.2\) cannot run inside the model"
    ):
        job("augment.preset=seed")
    specs = augment_layers.layer_specs(
        job("augment.preset=seed", "augment.shear_range=0").augment, SIZE
    )
    assert [name for name, _ in specs] == [
        "RandomRotation",
        "RandomTranslation",
        "RandomZoom",
        "RandomFlip",
    ]


def test_options_the_layers_cannot_reproduce_name_the_field():
    with pytest.raises(
        augment_layers.ModelAugmentError,
        match=r"`augment.zoom_range` \(\[0.5, 2.5\]\): inside the model the upper",
    ):
        augment_layers.layer_specs(job("augment.zoom_range=[0.5, 2.5]").augment, SIZE)
    with pytest.raises(
        augment_layers.ModelAugmentError, match=r"`augment.width_shift_range` \(40.0\)"
    ):
        augment_layers.layer_specs(job("augment.width_shift_range=40").augment, SIZE)


def test_nothing_on_builds_no_stack_and_zero_ranges_are_identity_in_training():
    assert augment_layers.training_augmentation(job().augment, SIZE, 0) is None
    assert not nn_model.has_augmentation(nn_model.build_job_model(job(), 3))
    # the same layers at zero strength, as the mapping makes them: rotation 0, zoom 1, shift 0
    layers = augment_layers.build_layers(
        [
            ("RandomRotation", {"factor": 0.0, "fill_mode": "nearest"}),
            ("RandomTranslation", {"height_factor": 0.0, "width_factor": 0.0}),
            ("RandomZoom", {"height_factor": (0.0, 0.0), "width_factor": (0.0, 0.0)}),
            ("RandomBrightnessScale", {"lower": 1.0, "upper": 1.0}),
        ],
        seed=3,
    )
    x = images().astype(np.float32)
    for layer in layers:
        np.testing.assert_array_equal(layer(x, training=True).numpy(), x, err_msg=layer.name)


def test_a_seeded_horizontal_flip_gives_each_image_or_its_mirror():
    def flipped_rows(seed: int) -> list[bool]:
        stack = augment_layers.training_augmentation(
            job("augment.horizontal_flip=true", f"augment.seed={seed}").augment, SIZE, 0
        )
        x = images(16).astype(np.float32)
        out = stack(x, training=True).numpy()
        rows = []
        for view, image in zip(out, x, strict=True):
            mirrored = np.array_equal(view, image[:, ::-1])
            assert mirrored or np.array_equal(view, image)
            rows.append(mirrored)
        np.testing.assert_array_equal(stack(x, training=False).numpy(), x)
        return rows

    first = flipped_rows(5)
    assert 0 < sum(first) < 16  # both outcomes occur
    assert flipped_rows(5) == first  # the seed fixes them


def test_zoom_has_image_data_generator_s_direction():
    """A zoom of 1.5 shows more of the image (zooms out), 0.75 less, as in tf_keras'
    ImageDataGenerator.apply_transform with zx = zy = z."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    smooth = np.stack([xx * 6, yy * 6, (xx + yy) * 3], axis=-1)  # bilinear is exact on it
    idg = ImageDataGenerator(fill_mode="constant", cval=0.0)
    for z in (1.5, 0.75):
        ((name, kwargs),) = augment_layers.layer_specs(
            job(f"augment.zoom_range=[{z}, {z}]", "augment.fill_mode=constant").augment, SIZE
        )
        layer = augment_layers.build_layers([(name, kwargs)], seed=0)[0]
        ours = layer(smooth[None], training=True).numpy()[0]
        theirs = idg.apply_transform(smooth, {"zx": z, "zy": z})
        centre = slice(SIZE // 2 - 8, SIZE // 2 + 8)  # inside the image for both
        np.testing.assert_allclose(ours[centre, centre], theirs[centre, centre], atol=1e-3)
        # and the direction: the horizontal ramp's slope is multiplied by z
        slope = np.diff(ours[SIZE // 2, centre, 0]).mean()
        assert slope == pytest.approx(6 * z, rel=1e-4)


def test_brightness_multiplies_and_clips_as_image_data_generator():
    layer = RandomBrightnessScale(1.5, 1.5, seed=0)
    x = images(2).astype(np.float32)
    np.testing.assert_allclose(layer(x, training=True).numpy(), np.clip(x * 1.5, 0, 255), rtol=1e-6)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    # ImageDataGenerator (PIL's enhancer) agrees up to its rounding to whole pixels
    idg = ImageDataGenerator().apply_transform(x[0], {"brightness": 1.5})
    assert np.abs(idg - np.clip(x[0] * 1.5, 0, 255)).max() <= 1.0


@pytest.fixture(scope="module")
def augmented():
    """A model with every model-side option on, and the same model built without them."""
    options = (
        "augment.rotation_range=30",
        "augment.width_shift_range=0.1",
        "augment.height_shift_range=0.1",
        "augment.zoom_range=0.2",
        "augment.horizontal_flip=true",
        "augment.brightness_range=[0.7, 1.3]",
        "augment.color_jitter.contrast=0.3",
    )
    with_stack = nn_model.build_job_model(job(*options), 3)
    without = nn_model.build_model(job().model, 3, SIZE)
    without.set_weights(with_stack.get_weights())
    yield with_stack, without
    tf_keras.backend.clear_session()


def test_inference_and_the_export_are_the_model_without_augmentation(augmented, tmp_path):
    net, plain = augmented
    assert nn_model.has_augmentation(net) and len(net.weights) == len(plain.weights)
    assert nn_model.augmentation_steps(net) == [
        "rotation",
        "translation",
        "zoom",
        "flip",
        "brightness_scale",
        "contrast",
    ]
    assert nn_model.augmentation_steps(plain) == []
    x = images(6, size=48)  # served images of another size are resized first, as before
    expected = plain.predict_on_batch(x)
    np.testing.assert_allclose(net.predict_on_batch(x), expected, atol=1e-6)
    np.testing.assert_allclose(net(x, training=False).numpy(), expected, atol=1e-6)
    nn_io.export_model(net, tmp_path / "model.keras")
    exported = nn_io.load_exported(tmp_path / "model.keras")
    assert [layer.name for layer in exported.layers] == [layer.name for layer in plain.layers]
    np.testing.assert_allclose(nn_io.predict_probabilities(exported, x), expected, atol=1e-6)
    # the BatchNorm switch keeps the stack; the serving copy keeps the backbone's mode
    frozen = nn_model.with_batchnorm(net, trains=False)
    assert nn_model.has_augmentation(frozen)
    serving = nn_model.serving_model(frozen)
    assert not nn_model.has_augmentation(serving)
    calls = [n.call_kwargs for d in serving._nodes_by_depth.values() for n in d]
    assert {"training": False} in calls


def test_the_stack_changes_training_views_and_a_model_trains_an_adam_step(augmented):
    net, _ = augmented

    def views(x: np.ndarray, training: bool) -> tf.Tensor:  # the model's first layers
        return net.get_layer("augment")(net.get_layer("resize")(x), training=training)

    x = images(4)
    trained_view = views(x, training=True).numpy()
    assert np.abs(trained_view - x).mean() > 1.0  # the images were transformed
    assert trained_view.min() >= 0.0 and trained_view.max() <= 255.0
    np.testing.assert_array_equal(views(x, training=False).numpy(), x)
    nn_model.set_trainable(net, Trainable.parse("all"))
    stage = StageSection(name="s", epochs=1, learning_rate=1e-3, optimizer="adam")
    nn_model.compile_stage(net, stage, steps_per_epoch=1)
    net.run_eagerly = True  # graph tracing is the slow part; the same step otherwise
    before = [w.copy() for w in net.get_weights()]
    history = net.fit(x, np.array([0, 1, 2, 0]), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(a, b) for a, b in zip(before, net.get_weights(), strict=True)]
    assert sum(changed) > len(changed) // 2
    assert tf.is_tensor(net.optimizer.iterations) and int(net.optimizer.iterations) == 1

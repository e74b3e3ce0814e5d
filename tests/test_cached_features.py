"""Cached features for head-only stages, without Ray: which stages use them, their
fingerprint, the model cut at its pooling layer, and the parts' rows per worker. The runs
that compute, find and reuse them (a resumed run, a sweep trial) are in
tests/test_weights_shipping.py."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tljob.config import JobConfig
from tljob.config.features import cached_stage_indices, stage_features
from tljob.data.features import FeatureKey, FeaturesManifest, features_dir, part_name

HEAD = {"name": "head", "epochs": 2, "learning_rate": 1e-3, "trainable": "head"}
TOP = {"name": "top", "epochs": 1, "learning_rate": 1e-4, "trainable": "top:10"}


def _job(stages=(HEAD, TOP), **sections) -> JobConfig:
    tree = {
        "data": {"source": "/data", "image_size": 32},
        "model": {"backbone": "mobilenet_v2_tv", "weights": "imagenet"},
        "train": {"stages": list(stages)},
        **sections,
    }
    return JobConfig.model_validate(tree)


def test_auto_caches_head_stages_until_the_backbone_trains():
    job = _job(stages=(HEAD, {**HEAD, "name": "head2"}, TOP, {**HEAD, "name": "head3"}))
    choices = stage_features(job)
    assert [c.cached for c in choices] == [True, True, False, False]
    assert choices[2].reason == "it trains backbone layers (trainable: top:10)"
    assert choices[3].reason == ("stage 3 'top' trains the backbone before it (trainable: top:10)")
    assert cached_stage_indices(job) == (0, 1)


@pytest.mark.parametrize(
    ("sections", "reason"),
    [
        (
            {"augment": {"preset": "seed"}},
            "augmentation (augment.where: data) draws new views every epoch",
        ),
        (
            {"augment": {"where": "model", "horizontal_flip": True}},
            "augmentation (augment.where: model) draws new views every epoch",
        ),
        ({"augment": {"mixup_alpha": 0.2}}, "MixUp / CutMix mix new batches every epoch"),
        (
            {"model": {"backbone": "mobilenet_v2_tv", "weights": "none"}},
            "the backbone's weights are random (model.weights: none)",
        ),
    ],
)
def test_auto_never_caches_what_changes_every_epoch_or_every_build(sections, reason):
    choice = stage_features(_job(**sections))[0]
    assert (choice.cached, choice.reason) == (False, reason)


def test_images_is_never_cached_and_cached_where_invalid_is_refused():
    job = _job(stages=({**HEAD, "features": "images"}, TOP))
    assert stage_features(job)[0].cached is False
    assert cached_stage_indices(_job(stages=({**HEAD, "features": "cached"},))) == (0,)
    with pytest.raises(ValidationError) as refused:
        _job(stages=(HEAD, {**TOP, "features": "cached"}))
    assert (
        "`train.stages.1.features` ('cached'): stage 'top' cannot train on cached features "
        "because it trains backbone layers (trainable: top:10); use 'auto' (cached only "
        "where valid) or 'images'"
    ) in str(refused.value)
    with pytest.raises(ValidationError) as refused:
        _job(stages=({**HEAD, "features": "cached"},), augment={"preset": "seed"})
    assert "because augmentation (augment.where: data) draws new views" in str(refused.value)
    with pytest.raises(ValidationError) as refused:
        _job(stages=({**HEAD, "features": "some"},))
    assert "must be one of auto, images, cached" in str(refused.value)


KEY = FeatureKey(
    prepared_fingerprint="a" * 24,
    backbone="mobilenet_v2_tv",
    weights_sha256="b" * 64,
    image_size=96,
    preprocessing="torch",
    precision="float32",
)


@pytest.mark.parametrize(
    "change",
    [
        {"prepared_fingerprint": "c" * 24},
        {"backbone": "mobilenet_v3_small"},
        {"weights_sha256": "d" * 64},
        {"image_size": 64},
        {"preprocessing": "tf"},
        {"precision": "mixed_bfloat16"},
        {"batchnorm": "training"},
    ],
)
def test_every_part_of_the_key_changes_the_fingerprint(change):
    same = FeatureKey(**KEY.__dict__)
    assert same.fingerprint() == KEY.fingerprint()
    changed = FeatureKey(**{**KEY.__dict__, **change})
    assert changed.fingerprint() != KEY.fingerprint()
    assert features_dir("/p/x", changed).uri != features_dir("/p/x", KEY).uri


def test_each_worker_reads_an_equal_contiguous_share_of_the_parts(tmp_path):
    from tljob import storage
    from tljob.run.cached_stage import _part_bytes, _share

    folder = storage.resolve(str(tmp_path))
    features = np.arange(15 * 3, dtype=np.float32).reshape(15, 3)
    labels = np.arange(15) % 4
    for rank, rows in enumerate((slice(0, 5), slice(5, 10), slice(10, 15))):
        storage.write_bytes(
            folder.join("att", "train", part_name(rank)), _part_bytes(features[rows], labels[rows])
        )
    manifest = FeaturesManifest(
        fingerprint="f",
        attempt="att",
        key={},
        rows={"train": 15},
        parts={"train": [part_name(r) for r in range(3)]},
        dim=3,
    )
    got = [_share(folder, manifest, "train", rank, 2) for rank in range(2)]
    # 15 // 2 = 7 rows each: 0-6 and 7-13 (the 15th left out, as an equal split leaves it)
    np.testing.assert_array_equal(got[0][0], features[0:7])
    np.testing.assert_array_equal(got[1][0], features[7:14])
    np.testing.assert_array_equal(got[1][1], labels[7:14])
    assert got[0][0].dtype == np.float32 and got[0][1].dtype == np.int64
    whole = _share(folder, manifest, "train", 0, 1)
    np.testing.assert_array_equal(whole[0], features)


def test_the_head_on_the_features_is_the_model_and_trains_the_models_own_layers():
    from tljob.nn.features import compute_features, feature_dim, features_model, head_model
    from tljob.nn.model import build_model

    job = _job(model={"backbone": "mobilenet_v3_small", "weights": "none"})
    net = build_model(job.model, num_classes=3, image_size=32)
    images = np.random.default_rng(0).integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    extractor, head = features_model(net), head_model(net)
    features = compute_features(extractor, [images[:4], images[4:]], batch_size=3)
    assert features.shape == (6, feature_dim(net)) == (6, 576)
    np.testing.assert_allclose(
        head(features, training=False).numpy(), net(images, training=False).numpy(), atol=1e-5
    )
    # the head's variables are the model's: a change through one is seen by the other
    assert [id(v) for v in head.trainable_weights] == [
        id(v) for v in net.get_layer("classifier").trainable_weights
    ]
    head.get_layer("classifier").kernel.assign_add(np.ones((576, 3), np.float32))
    np.testing.assert_allclose(
        head(features, training=False).numpy(), net(images, training=False).numpy(), atol=1e-5
    )


def test_the_weights_digest_is_over_the_arrays_not_the_files_bytes(tmp_path):
    import h5py

    from tljob.zoo.weights_record import tensors_sha256

    def write(path, scale, note):
        with h5py.File(path, "w") as f:
            f.attrs["written"] = note  # what a second conversion changes, besides HDF5's own
            f.create_dataset("layers/conv/vars/0", data=np.arange(6, dtype=np.float32) * scale)
            f.create_dataset("layers/dense/vars/0", data=np.ones((2, 3), np.float32))
        return path

    first = write(tmp_path / "a.weights.h5", 1.0, "first")
    again = write(tmp_path / "b.weights.h5", 1.0, "second, another day")
    other = write(tmp_path / "c.weights.h5", 2.0, "first")
    assert first.read_bytes() != again.read_bytes()
    assert tensors_sha256(first) == tensors_sha256(again)
    assert tensors_sha256(other) != tensors_sha256(first)


# features: views K -- K augmented views of the training images, cycled by epoch

SEED_AUG = {"augment": {"preset": "seed"}}


def test_views_are_cached_features_valid_with_augmentation_in_data():
    from tljob.config.features import job_feature_views

    job = _job(stages=({**HEAD, "features": "views  3"}, TOP), **SEED_AUG)
    assert job.train.stages[0].features == "views 3"  # saved in one spelling
    choices = stage_features(job)
    assert [(c.cached, c.views) for c in choices] == [(True, 3), (False, 0)]
    assert job_feature_views(job) == 3
    # without augmentation they are valid too (K copies of the same images)
    assert stage_features(_job(stages=({**HEAD, "features": "views 1"},)))[0].views == 1
    # auto never chooses views: with augmentation in data it chooses images
    auto = _job(stages=(HEAD, TOP), **SEED_AUG)
    assert [(c.cached, c.views) for c in stage_features(auto)] == [(False, 0), (False, 0)]
    assert job_feature_views(auto) == 0 and job_feature_views(_job()) == 0


@pytest.mark.parametrize(
    ("stages", "sections", "reason"),
    [
        (
            ({**HEAD, "features": "views 2"},),
            {"augment": {"where": "model", "horizontal_flip": True}},
            "stage 'head' cannot train on cached features of augmented views because "
            "augmentation (augment.where: model) draws new views every epoch",
        ),
        (
            ({**HEAD, "features": "views 2"},),
            {"augment": {"preset": "seed", "mixup_alpha": 0.2}},
            "because MixUp / CutMix mix new batches every epoch",
        ),
        (
            (HEAD, {**TOP, "features": "views 2"}),
            SEED_AUG,
            "`train.stages.1.features` ('views 2'): stage 'top' cannot train on cached "
            "features of augmented views because it trains backbone layers",
        ),
        (
            ({**HEAD, "features": "views 2"},),
            {"model": {"backbone": "mobilenet_v2_tv", "weights": "none"}},
            "because the backbone's weights are random (model.weights: none)",
        ),
        (
            # auto caches the first (nothing augments), the second asks for views
            (HEAD, {**HEAD, "name": "head2", "features": "views 2"}),
            {},
            "`train.stages.1.features` ('views 2'): every stage on cached features trains on "
            "the same features, and stage 1 'head' trains on un-augmented ones; give both the "
            "same 'views K', or set one to 'images'",
        ),
    ],
)
def test_views_are_refused_where_steps_change_or_features_differ(stages, sections, reason):
    with pytest.raises(ValidationError) as refused:
        _job(stages=stages, **sections)
    assert reason in str(refused.value)


@pytest.mark.parametrize("value", ["views 0", "views", "views two", "view 3", "views -1", "4"])
def test_malformed_views_are_refused_naming_the_field_the_value_and_the_rule(value):
    from tljob.config import ConfigError, load_config

    with pytest.raises(ConfigError) as refused:
        load_config(None, ["data.source=/x", f"train.stages.0.features={value}"])
    shown = repr(int(value)) if value.isdigit() else repr(value)
    assert str(refused.value) == (
        f"invalid config:\n  `train.stages.0.features` ({shown}): must be one of auto, "
        "images, cached, or 'views K' with K an integer >= 1 (cached features of K augmented "
        "views of the training images)"
    )


def test_plain_features_keep_their_fingerprint_and_views_have_their_own():
    from tljob.run.cached_stage import feature_key

    # the fingerprint of KEY before views existed: un-augmented features are found again
    assert KEY.fingerprint() == "e18fc97ab1ddcfb9d378051db03710b0b1757fb193ca06b34b6b1069fb534561"
    assert KEY.splits == ("train", "val")

    def key(stages=({**HEAD, "features": "views 3"},), **sections):
        job = _job(stages=stages, **{"augment": {"preset": "seed"}, **sections})
        return feature_key(job, "/p/prepared/abc", "b" * 64)

    plain = feature_key(_job(), "/p/prepared/abc", "b" * 64)
    assert (plain.views, plain.augment) == (0, "")
    views = key()
    assert views.views == 3 and len(views.augment) == 64
    assert views.splits == ("train-view-0", "train-view-1", "train-view-2", "val")
    assert FeatureKey(**{**views.__dict__, "views": 0, "augment": ""}) == plain
    changed = [
        key(stages=({**HEAD, "features": "views 4"},)),
        key(augment={"preset": "seed", "rotation_range": 10.0}),
        key(augment={"preset": "light"}),
        key(data={"source": "/data", "image_size": 32, "seed": 7}),  # augment.seed unset
        key(augment={"preset": "seed", "seed": 7}),
    ]
    fingerprints = {k.fingerprint() for k in [plain, views, *changed]}
    assert len(fingerprints) == 2 + len(changed)
    # augment.seed set: data.seed no longer draws the views
    assert (
        key(augment={"preset": "seed", "seed": 7}, data={"source": "/d", "image_size": 32}).augment
        == key(
            augment={"preset": "seed", "seed": 7},
            data={"source": "/d", "image_size": 32, "seed": 9},
        ).augment
    )


def test_epoch_e_trains_on_view_e_mod_k_counted_over_the_run():
    from tljob.data.features import view_of_epoch
    from tljob.run import feed

    assert [view_of_epoch(e, 3) for e in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    # 3 views of 4 rows, each row's features holding its view's number
    views = [(np.full((4, 2), k, np.float32), np.arange(4)) for k in range(3)]
    # a stage starting at global epoch 4 (a resumed run): views 1, 2, 0, 1
    dataset = feed.in_memory_train(views, 2, shuffled=True, seed=0, first_epoch=lambda: 4)
    batches = [(f.numpy(), y.numpy()) for f, y in dataset.take(8)]
    assert [int(f[0, 0]) for f, _ in batches] == [1, 1, 2, 2, 0, 0, 1, 1]
    for epoch in range(4):  # every row once per epoch, in the epoch's own order
        rows = np.concatenate([y for _, y in batches[2 * epoch : 2 * epoch + 2]])
        np.testing.assert_array_equal(rows, np.random.default_rng([0, 4 + epoch]).permutation(4))
    with pytest.raises(ValueError, match="views of different lengths"):
        feed.in_memory_train([views[0], (views[1][0][:1], views[1][1][:1])], 2, False, 0, lambda: 0)

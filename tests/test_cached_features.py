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

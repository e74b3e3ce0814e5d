"""``features: views K`` on a real Ray Data stream, without Ray Train: the views' dataset a
run gives its workers (``PreparedData.train_views``), passed K times through a backbone by
the workers' own pass (``tljob.run.cached_stage.backbone_passes``), yields for view k the
backbone's features of the images as the training stream augments them in epoch k (the
``Augmenter`` applied to the stored images directly here), and the views differ. Whatever
epoch a resumed run starts at, the views are 0..K-1; the training stream is not touched.
The run around it (Ray Train's shards, features.json, the head trained on the views) is
the path of plain cached features, in tests/test_weights_shipping.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import write_digits_tree

from tljob import ray_private, storage
from tljob.augment.keys import image_keys
from tljob.augment.pipeline import Augmenter
from tljob.config import load_config
from tljob.data.features import VIEWS_DATASET
from tljob.data.prepared import StoreSettings, read_manifest
from tljob.data.shards import decode_stored

pytestmark = pytest.mark.ray

SIZE = 32
VIEWS = 3


def _split_rows(prepared_uri: str, split: str) -> tuple[dict, dict, int]:
    """A split's stored images and labels by sha256, and their stored size."""
    folder = storage.resolve(prepared_uri)
    manifest = read_manifest(folder)
    size = StoreSettings(**manifest.store).size_of(split)
    images, labels = {}, {}
    for name in manifest.files[split]:
        for row in pq.read_table(folder.join(name).path).to_pylist():
            images[row["sha256"]] = decode_stored(row["image"], size, manifest.store["pixels"])
            labels[row["sha256"]] = row["label"]
    return images, labels, size


def _matches(got: np.ndarray, want: np.ndarray, tolerance: float) -> np.ndarray:
    """For each row of ``got``, the row of ``want`` within ``tolerance`` (-1: none)."""
    distance = np.abs(got[:, None, :] - want[None, :, :]).max(axis=2)
    return np.where(distance.min(axis=1) <= tolerance, distance.argmin(axis=1), -1)


def test_each_view_is_the_backbones_features_of_that_epochs_augmented_images(
    tmp_path: Path, ray_cluster
):
    import ray

    from tljob.data.pipeline import prepare_data
    from tljob.nn.features import compute_features, features_model
    from tljob.nn.model import build_model
    from tljob.run.cached_stage import backbone_passes, feature_key

    if not ray.is_initialized():
        ray.init(address=ray_cluster["gcs"], log_to_driver=False)
    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=10, scale=2)
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "source": str(data),
                    "image_size": SIZE,
                    "val_fraction": 0.2,
                    "seed": 3,
                    "prepared_path": str(tmp_path / "prepared"),
                },
                "model": {"backbone": "mobilenet_v3_small", "weights": "imagenet"},
                "augment": {"preset": "seed"},
                "train": {
                    "stages": [
                        {
                            "name": "head",
                            "epochs": 4,
                            "learning_rate": 1e-3,
                            "features": f"views {VIEWS}",
                        }
                    ]
                },
            }
        )
    )
    job = load_config(config, [])
    # a resumed run at global epoch 5: its training stream starts at epoch 5, the views at 0
    prepared = prepare_data(job, epoch_offset=5)
    assert prepared.train_views is not None
    key = feature_key(job, prepared.prepared_uri, "0" * 64)
    assert key.splits == ("train-view-0", "train-view-1", "train-view-2", "val")
    # any backbone will do (the random weights of the config's backbone, built once here)
    random = load_config(None, ["data.source=/x", "model.backbone=mobilenet_v3_small",
                                 "model.weights=none"])  # fmt: skip
    net = build_model(random.model, num_classes=3, image_size=SIZE)
    extractor = features_model(net)
    # the worker's shard as Ray Train makes it (streaming_split, every pass an execution)
    [shard] = prepared.train_views.streaming_split(1, equal=True)
    arrays = backbone_passes({VIEWS_DATASET: shard, "val": prepared.val}, extractor, key)
    assert ray_private.execution_index(prepared.train.context) == 0  # never executed

    stored, labels, _ = _split_rows(prepared.prepared_uri, "train")
    shas = sorted(stored)
    assert len(shas) == 24  # 30 images, 6 for validation
    stack = np.stack([stored[s] for s in shas])
    want = [
        compute_features(extractor, [Augmenter(job.augment, SIZE, 3)(stack, image_keys(shas), k)])
        for k in range(VIEWS)
    ]
    # float tolerance relative to the features' size (a random network's are tiny)
    scale = float(np.abs(np.concatenate(want)).max())
    assert scale > 0
    for k in range(VIEWS):
        got, got_labels = arrays[f"train-view-{k}"]
        assert got.shape == (24, 576) and got_labels.dtype == np.int64
        for j in range(VIEWS):
            match = _matches(got, want[j], 1e-4 * scale)
            if j == k:  # every image once, with its label, as epoch k augments it
                assert sorted(match.tolist()) == list(range(24))
                assert got_labels.tolist() == [labels[shas[m]] for m in match]
            else:  # another view: no image's features are the same
                assert (match == -1).all(), (k, j)
    # validation: once, never augmented
    val_stored, val_labels, val_size = _split_rows(prepared.prepared_uri, "val")
    assert val_size == SIZE
    val_shas = sorted(val_stored)
    val_want = compute_features(extractor, [np.stack([val_stored[s] for s in val_shas])])
    got, got_labels = arrays["val"]
    match = _matches(got, val_want, 1e-4 * scale)
    assert sorted(match.tolist()) == list(range(6))
    assert got_labels.tolist() == [val_labels[val_shas[m]] for m in match]

"""Cached backbone features on storage: their fingerprint, layout and publishing. Pure (no
Ray, no TensorFlow).

A head-only stage (``tljob.config.features``) trains on the pooled features of its frozen
backbone. They are computed once, by the Ray Train workers of the first run that needs
them, each over its own share of the training and validation images, and kept beside the
prepared data they came from::

    <prepared>/features/<fingerprint>/features.json         written last: complete
    <prepared>/features/<fingerprint>/<attempt>/train/part-<rank>.parquet
    <prepared>/features/<fingerprint>/<attempt>/val/part-<rank>.parquet

Each part holds the rows of one worker: ``feature`` (float32, the pooled vector) and
``label`` (int64). The fingerprint is a sha256 over everything the features depend on:
the prepared data's fingerprint, the backbone, the sha256 of its initial weights' arrays
(``tljob.zoo.weights_record.tensors_sha256``: not of the file, which converting the same
checkpoint twice writes differently), the image
size, the backbone's preprocessing, the BatchNorm mode (inference: the backbone is frozen)
and the numeric precision; for ``tljob backbones rank``'s features of a subsample, also
what identifies the subsample (``tljob.rank``: one part per split there, and its timing);
for ``features: views K``, K and a sha256 of the ``augment`` section and its seed, the
training split then stored as K splits ``train-view-<k>``, the k-th drawn as the training
stream draws epoch k (``tljob.run.cached_stage``).
Any change gives a new folder; an unchanged one is reused by
every later run and sweep trial. Concurrent runs that compute the same features write
under their own attempt; the first to create ``features.json`` wins, as with prepared
data (``tljob.data.prepared.publish``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from tljob import storage
from tljob.data.prepared import publish_first

FORMAT_VERSION = 1
FEATURES_DIR = "features"
MANIFEST_FILE = "features.json"
SPLITS = ("train", "val")
RUN_RECORD = "cached_features.json"  # in a run directory: what its cached stages used
# The trainer's dataset of the training images whose executions are views 0, 1, ...
# (``features: views K``; given to the workers only then, never executed otherwise)
VIEWS_DATASET = "train_views"
VIEW_SPLIT_PREFIX = "train-view-"  # + k: the features of the training images' view k
BATCHNORM_MODE = "inference"  # a frozen backbone's BatchNorm uses its moving statistics


@dataclass(frozen=True)
class FeatureKey:
    """What the features depend on: the parts of their fingerprint."""

    prepared_fingerprint: str
    backbone: str
    weights_sha256: str
    image_size: int
    preprocessing: str
    precision: str
    batchnorm: str = BATCHNORM_MODE
    # What identifies a subset of the rows (``tljob backbones rank``'s subsample: a sha256
    # of its uris); "" for every row, and then no part of the fingerprint.
    subsample: str = ""
    # K augmented views of the training images (``features: views K``) and what draws
    # them (``augment_sha256``); 0 and "" for the images as they are, and then no part of
    # the fingerprint (un-augmented features keep theirs).
    views: int = 0
    augment: str = ""

    def fingerprint(self) -> str:
        parts = {"format_version": FORMAT_VERSION, **asdict(self)}
        for optional in ("subsample", "views", "augment"):
            if not parts[optional]:
                del parts[optional]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits of these features: ``SPLITS``, or one training split per view."""
        if not self.views:
            return SPLITS
        return (*(view_split(k) for k in range(self.views)), "val")


def view_split(view: int) -> str:
    """The split name of the training images' augmented view ``view`` (0-based)."""
    return f"{VIEW_SPLIT_PREFIX}{view}"


def image_dataset(split: str) -> str:
    """The trainer's dataset that features ``split`` is computed from (each view's split:
    one execution of ``VIEWS_DATASET``)."""
    return VIEWS_DATASET if split.startswith(VIEW_SPLIT_PREFIX) else split


def view_of_epoch(global_epoch: int, views: int) -> int:
    """The view a stage trains on in the run's 0-based ``global_epoch``: the views cycle by
    epoch, counted over the whole run, so a resumed run continues the cycle."""
    return global_epoch % views


def augment_sha256(section: dict, seed: int) -> str:
    """What draws the augmented views: the ``augment`` section (as saved) and its seed
    (``augment.seed``, else ``data.seed``), as a sha256."""
    text = json.dumps({"augment": section, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class FeaturesManifest:
    """``features.json``: which attempt holds the parts, and what they hold."""

    fingerprint: str
    attempt: str
    key: dict
    rows: dict  # split -> rows over every part
    parts: dict  # split -> [file names under <attempt>/<split>]
    dim: int
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeaturesManifest:
        return cls(**json.loads(text))

    def part_uris(self, folder: storage.Location, split: str) -> list[str]:
        return [folder.join(self.attempt, split, name).uri for name in self.parts[split]]


def features_dir(prepared_uri: str, key: FeatureKey) -> storage.Location:
    """Where the features of ``key`` live: under the prepared data they came from."""
    return storage.resolve(prepared_uri).join(FEATURES_DIR, key.fingerprint())


def part_name(rank: int) -> str:
    return f"part-{rank:05d}.parquet"


def read_manifest(folder: storage.Location) -> FeaturesManifest | None:
    """The published manifest of ``folder``, or None (nothing complete there yet, or an
    older format, which is computed again)."""
    loc = folder.join(MANIFEST_FILE)
    if not storage.exists(loc):
        return None
    manifest = FeaturesManifest.from_json(storage.read_text(loc))
    return manifest if manifest.format_version == FORMAT_VERSION else None


def publish(folder: storage.Location, manifest: FeaturesManifest) -> FeaturesManifest:
    """Publish ``manifest`` unless another run already did; return the published one
    (``tljob.data.prepared.publish_first``)."""
    return publish_first(folder, MANIFEST_FILE, manifest, read_manifest)

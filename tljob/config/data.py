"""The ``data`` section: where the images are, how they are split, and how they are
prepared once into shards (``tljob.data.prepared`` reads these). Pure."""

from __future__ import annotations

import os
import posixpath
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tljob.config._base import _Section

MAX_IMAGE_SIZE = 1024


class DataSection(_Section):
    source: str | list[str] = Field(
        "",
        description="Required. Where the images are: a directory (or URI) holding "
        "<source>/<class name>/<image file>, or a manifest file (.csv or .parquet) with "
        "columns uri,label; a manifest's relative uris are relative to its folder. Or a "
        "list of such sources, merged into one listing: the classes are their union, a uri "
        "listed by two sources is one image with the first source's label (another label "
        "in a later source is quarantined as label_conflict), and every source is part of "
        "the prepared data's fingerprint, in order. On the command line: "
        "`--set 'data.source=[labelled/, pseudo.csv]'`.",
    )
    classes: list[str] | None = Field(
        None,
        description="The class names, in label-index order. Empty means the sorted class "
        "folders (or the sorted distinct labels of a manifest). When set, images of any "
        "other label are quarantined (unknown_label).",
    )
    image_size: int | None = Field(
        None,
        ge=1,
        le=MAX_IMAGE_SIZE,
        description="Side in pixels images are resized to (bilinear) before the backbone. "
        "Empty means the backbone's default (224 for the ImageNet backbones). At most "
        f"{MAX_IMAGE_SIZE}: a worker's memory grows with the square of the side (at 1024 one "
        "batch of 32 already needs tens of GiB for backprop), and the preflight check refuses "
        "sizes the cluster's nodes cannot hold.",
    )
    val_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Fraction of each class held out for validation (stratified split).",
    )
    test_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of each class held out as the test split, which never takes "
        "part in training, best-epoch choice, schedules, early stopping or sweep ranking. "
        "Drawn first from each class, validation from the rest: the test images depend only "
        "on the listing, the seed and this fraction, never on `val_fraction`. 0 means no "
        "test split; above 0 every class needs at least 3 usable images (1 test, 1 "
        "validation, 1 training). val_fraction + test_fraction must be < 1.",
    )
    test_source: str | None = Field(
        None,
        description="A separate test set instead of `test_fraction`: a folder of class "
        "folders, a manifest (.csv or .parquet, uri,label) or an s3:// URI, prepared as "
        "`source` is (listing, quarantine, duplicates, fingerprint) into shards of its own. "
        "Its classes must be training classes; its images byte-identical to a `source` "
        "image are set aside as duplicates. Empty means none.",
    )
    seed: int = Field(
        0,
        description="Seed of the train/validation/test split; the same seed gives the same split.",
    )
    max_images_per_class: int | None = Field(
        None,
        ge=1,
        description="Use at most this many images of each class (the first ones in sorted "
        "path order). Empty means all.",
    )
    shuffle_buffer: int = Field(
        1024,
        ge=0,
        description="Rows in each worker's local shuffle buffer for training batches; "
        "0 disables shuffling.",
    )
    prepared_path: str | None = Field(
        None,
        description="Where decoded images are stored as Parquet shards, one folder per "
        "fingerprint of the data and the settings below. Empty means "
        "<run.storage_path>/prepared; runs with the same data reuse it.",
    )
    stored_size: int | None = Field(
        None,
        ge=1,
        le=2 * MAX_IMAGE_SIZE,
        description="Side in pixels of the stored (prepared) images; at least the training "
        "size so crops have pixels. Empty means ceil(image_size * 8 / 7) (224 -> 256).",
    )
    shard_pixels: Literal["raw", "jpeg", "png"] = Field(
        "raw",
        description="How prepared pixels are stored: raw uint8 (nothing to decode per "
        "epoch) or encoded as JPEG/PNG (smaller, decoded every epoch).",
    )
    shard_quality: int = Field(
        95, ge=1, le=100, description="JPEG quality when shard_pixels is jpeg."
    )
    shard_target_mb: float = Field(
        128.0, gt=0.0, description="Target size of one prepared Parquet shard, in MB."
    )
    max_image_pixels: int = Field(
        100_000_000,
        ge=1,
        description="Images with more pixels (width x height, read from the header before "
        "decoding) are quarantined as too_many_pixels: a decompression-bomb guard.",
    )
    max_bad_fraction: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="The run stops (exit 2) when more than this fraction of the listed "
        "images is quarantined.",
    )

    @property
    def sources(self) -> tuple[str, ...]:
        """``source`` as a tuple: one entry for a string (or a list of one), each entry of
        a list in order."""
        return (self.source,) if isinstance(self.source, str) else tuple(self.source)

    @field_validator("source", mode="before")
    @classmethod
    def _source_or_sources(cls, source: Any) -> Any:
        # Before pydantic's own check, so that a bad value gets one message, not one per
        # member of `str | list[str]`.
        if isinstance(source, str):
            return source
        if not isinstance(source, list):
            raise ValueError(
                "must be a folder, a manifest or an s3:// URI, or a list of them (it is of "
                f"type {type(source).__name__})"
            )
        if not source:
            raise ValueError("is an empty list: give at least one folder, manifest or s3:// URI")
        seen: dict[str, int] = {}
        for index, entry in enumerate(source):
            if not isinstance(entry, str):
                raise ValueError(
                    f"entry {index} ({entry!r}) must be a folder, a manifest or an s3:// "
                    f"URI (it is of type {type(entry).__name__})"
                )
            if not entry.strip():
                raise ValueError(
                    f"entry {index} ({entry!r}) is empty: remove it, or name a folder, a "
                    "manifest or an s3:// URI"
                )
            first = seen.setdefault(_source_key(entry), index)
            if first != index:
                raise ValueError(
                    f"entry {index} ({entry!r}) names the same source as entry {first} "
                    f"({source[first]!r}): its images would be listed twice; remove one"
                )
        return source

    @field_validator("test_source")
    @classmethod
    def _empty_is_none(cls, source: str | None) -> str | None:
        return source if source else None

    @model_validator(mode="after")
    def _split_fractions(self) -> DataSection:
        # Messages name fields relative to the section (config.load adds `data.`).
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"`val_fraction` ({self.val_fraction}) + `test_fraction` "
                f"({self.test_fraction}) must be < 1: the rest of each class is the training "
                "split; lower one of them"
            )
        if self.test_fraction > 0 and self.test_source is not None:
            raise ValueError(
                f"`test_fraction` ({self.test_fraction}) and `test_source` "
                f"({self.test_source!r}) are mutually exclusive: the test split comes either "
                "from `source` or from its own images. Set `test_fraction: 0` to use "
                "`test_source`, or remove `test_source`"
            )
        return self

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, classes: list[str] | None) -> list[str] | None:
        if classes is not None:
            if len(classes) < 2:
                raise ValueError("needs at least two class names")
            if len(set(classes)) != len(classes) or not all(classes):
                raise ValueError("class names must be distinct and non-empty")
        return classes


def _source_key(source: str) -> str:
    """What two entries of a ``source`` list are compared by: a URI without its trailing
    "/", a local path made absolute and normalised (``a/`` and ``./a`` are one folder)."""
    if "://" in source:
        scheme, rest = source.split("://", 1)
        return f"{scheme.lower()}://{posixpath.normpath(rest) if rest else rest}"
    return os.path.normpath(os.path.abspath(os.path.expanduser(source)))

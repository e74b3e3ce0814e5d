"""Which stages train on cached features (pure): ``train.stages[].features``.

A stage can train its head on the backbone's pooled features, computed once and stored,
instead of running the backbone over every image every epoch, when those features are the
same every epoch and equal to what the image path would compute:

- the stage trains the head only (``trainable: head``): its backbone is frozen, so its
  BatchNorm layers run in inference mode whatever ``batchnorm`` says;
- no earlier stage trained the backbone: its weights are still the loaded ones;
- the weights are pretrained (``model.weights`` not 'none'): random ones are drawn anew
  by every process that builds the network;
- no augmentation (``augment``: no per-image option, no MixUp / CutMix), in the data or in
  the model: each epoch would see new views.

``features: auto`` (the default) chooses cached features whenever they are valid,
``images`` never, ``cached`` insists (the config is refused when they are not valid).

``features: views K`` (K >= 1) insists on cached features of K augmented views of the
training images: valid where ``cached`` is, except that augmentation in data is allowed
(the backbone runs once per view; epoch e trains on view e mod K). Augmentation in the
model and MixUp / CutMix still refuse it: they change every step, not every epoch.
``auto`` never chooses views. Every cached stage of a job trains on the same features.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

FeaturesMode = Literal["auto", "images", "cached"]
FEATURES_MODES: tuple[str, ...] = get_args(FeaturesMode)
VIEWS_PATTERN = re.compile(r"^views\s+([0-9]+)$")
FEATURES_RULE = (
    f"must be one of {', '.join(FEATURES_MODES)}, or 'views K' with K an integer >= 1 "
    "(cached features of K augmented views of the training images)"
)


def parse_features(value: Any) -> str:
    """A stage's ``features`` as saved: a mode, or 'views K' (K >= 1, one space)."""
    if value in FEATURES_MODES:
        return value
    match = VIEWS_PATTERN.match(value.strip()) if isinstance(value, str) else None
    if match is None or int(match.group(1)) < 1:
        raise ValueError(FEATURES_RULE)
    return f"views {int(match.group(1))}"


def feature_views(features: str) -> int:
    """K of 'views K'; 0 for every other ``features`` value."""
    match = VIEWS_PATTERN.match(features)
    return int(match.group(1)) if match else 0


def why_not_cached(job: Any, index: int, views: bool = False) -> str | None:
    """Why stage ``index`` of ``job`` (a ``JobConfig``) cannot train on cached features
    (with ``views``: of augmented views), or None when it can."""
    stage = job.train.stages[index]
    if stage.trainable.kind != "head":
        return f"it trains backbone layers (trainable: {stage.trainable})"
    for i, earlier in enumerate(job.train.stages[:index]):
        if earlier.trainable.kind != "head":
            return (
                f"stage {i + 1} {earlier.name!r} trains the backbone before it "
                f"(trainable: {earlier.trainable})"
            )
    if not job.model.weights.pretrained:
        return "the backbone's weights are random (model.weights: none)"
    if job.augment.soft_labels:
        return "MixUp / CutMix mix new batches every epoch"
    if job.augment.active and (not views or job.augment.where == "model"):
        return f"augmentation (augment.where: {job.augment.where}) draws new views every epoch"
    return None


@dataclass(frozen=True)
class StageFeatures:
    """How one stage is fed: ``cached`` (True: pooled features, of ``views`` augmented
    views when > 0) and, when not, why."""

    index: int
    cached: bool
    reason: str  # why not cached ("" when cached); 'features: images' when asked
    views: int = 0


def stage_features(job: Any) -> tuple[StageFeatures, ...]:
    """Every stage's choice, in order (``features: cached`` or 'views K' where invalid is
    refused by ``JobConfig``'s validation, so it is never seen here)."""
    choices = []
    for i, stage in enumerate(job.train.stages):
        if stage.features == "images":
            choices.append(StageFeatures(i, False, "features: images"))
            continue
        views = feature_views(stage.features)
        reason = why_not_cached(job, i, views=views > 0)
        choices.append(StageFeatures(i, reason is None, reason or "", views))
    return tuple(choices)


def cached_stage_indices(job: Any) -> tuple[int, ...]:
    """The indices of the stages that train on cached features."""
    return tuple(choice.index for choice in stage_features(job) if choice.cached)


def job_feature_views(job: Any) -> int:
    """K of the job's cached stages when they train on K augmented views, else 0."""
    return max((c.views for c in stage_features(job) if c.cached), default=0)


def refuse_invalid_cached(job: Any) -> None:
    """``ValueError`` naming the first stage set to ``features: cached`` or 'views K' that
    cannot be, or whose cached features differ from an earlier cached stage's."""
    for i, stage in enumerate(job.train.stages):
        views = feature_views(stage.features)
        insists = stage.features == "cached" or views > 0
        if insists and (reason := why_not_cached(job, i, views=views > 0)):
            what = "cached features of augmented views" if views else "cached features"
            raise ValueError(
                f"`train.stages.{i}.features` ({stage.features!r}): stage {stage.name!r} "
                f"cannot train on {what} because {reason}; use 'auto' (cached only where "
                "valid) or 'images'"
            )
    cached = [c for c in stage_features(job) if c.cached]
    for first, later in zip(cached, cached[1:], strict=False):
        if later.views != first.views:
            stages = job.train.stages
            raise ValueError(
                f"`train.stages.{later.index}.features` ({stages[later.index].features!r}): "
                f"every stage on cached features trains on the same features, and stage "
                f"{first.index + 1} {stages[first.index].name!r} trains on "
                f"{_features_text(first.views)}; give both the same 'views K', or set one "
                "to 'images'"
            )


def _features_text(views: int) -> str:
    return f"{views} augmented views ('views {views}')" if views else "un-augmented ones"

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

FeaturesMode = Literal["auto", "images", "cached"]
FEATURES_MODES: tuple[str, ...] = get_args(FeaturesMode)


def why_not_cached(job: Any, index: int) -> str | None:
    """Why stage ``index`` of ``job`` (a ``JobConfig``) cannot train on cached features,
    or None when it can."""
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
    if job.augment.active:
        return f"augmentation (augment.where: {job.augment.where}) draws new views every epoch"
    return None


@dataclass(frozen=True)
class StageFeatures:
    """How one stage is fed: ``cached`` (True: pooled features) and, when not, why."""

    index: int
    cached: bool
    reason: str  # why not cached ("" when cached); 'features: images' when asked


def stage_features(job: Any) -> tuple[StageFeatures, ...]:
    """Every stage's choice, in order (``features: cached`` where invalid is refused by
    ``JobConfig``'s validation, so it is never seen here)."""
    choices = []
    for i, stage in enumerate(job.train.stages):
        if stage.features == "images":
            choices.append(StageFeatures(i, False, "features: images"))
            continue
        reason = why_not_cached(job, i)
        choices.append(StageFeatures(i, reason is None, reason or ""))
    return tuple(choices)


def cached_stage_indices(job: Any) -> tuple[int, ...]:
    """The indices of the stages that train on cached features."""
    return tuple(choice.index for choice in stage_features(job) if choice.cached)


def refuse_invalid_cached(job: Any) -> None:
    """``ValueError`` naming the first stage set to ``features: cached`` that cannot be."""
    for i, stage in enumerate(job.train.stages):
        if stage.features == "cached" and (reason := why_not_cached(job, i)):
            raise ValueError(
                f"`train.stages.{i}.features` ('cached'): stage {stage.name!r} cannot train on "
                f"cached features because {reason}; use 'auto' (cached only where valid) or "
                "'images'"
            )

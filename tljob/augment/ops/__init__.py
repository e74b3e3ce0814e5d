"""The augmentation ops, one module each, and the registry: the ordered list below.

The registry's order is the order ops apply in: the geometry ops' factors (the crop's box,
then rotation, shift, shear and zoom about the centre, then the flips: tf_keras' own
composition), then the pixel ops on the warped view (brightness, channel shift, colour
jitter, RandAugment, random erasing), then the batch ops (MixUp / CutMix). It is also the
order of the preview's captions and of the in-model Keras layers.

Adding an op is one module (see ``base``, and docs/contributing-augmentation-op.md) and
one line below. The registry is checked on import: names, config fields and draw streams
are each one op's only.
"""

from __future__ import annotations

from collections.abc import Sequence

from tljob.augment.ops.base import AugmentOp, BatchOp, Fields, GeometryOp, PixelOp
from tljob.augment.ops.brightness import Brightness
from tljob.augment.ops.channel_shift import ChannelShift
from tljob.augment.ops.color_jitter import ColorJitter
from tljob.augment.ops.flip import Flip
from tljob.augment.ops.mixing import MixUpCutMix
from tljob.augment.ops.randaugment import RandAugment
from tljob.augment.ops.random_erasing import RandomErasing
from tljob.augment.ops.random_resized_crop import RandomResizedCrop
from tljob.augment.ops.rotation import Rotation
from tljob.augment.ops.shear import Shear
from tljob.augment.ops.shift import Shift
from tljob.augment.ops.zoom import Zoom
from tljob.errors import UserError

REGISTRY: tuple[AugmentOp, ...] = (
    RandomResizedCrop(),
    Rotation(),
    Shift(),
    Shear(),
    Zoom(),
    Flip(),
    Brightness(),
    ChannelShift(),
    ColorJitter(),
    RandAugment(),
    RandomErasing(),
    MixUpCutMix(),
)

_PLACES = ("source", "centred", "output")


class UnknownAugmentOpError(UserError, ValueError):
    """A name that is not a registered augmentation op."""


def check_registry(ops: Sequence[AugmentOp]) -> None:
    """Raise ``ValueError`` naming the ops at fault unless every name, config field, drawn
    parameter and draw stream (column) belongs to one op only, the kinds come in order (geometry,
    pixel, batch), one geometry op picks the source box and one batch op at most mixes."""
    seen: dict[str, str] = {}
    for op in ops:
        drawn = op.params if op.kind == "geometry" else getattr(op, "draws", ())
        owned = (
            f"name {op.name}",
            *(f"field {f}" for f in op.fields),
            *(f"parameter {p}" for p in drawn),
        )
        for thing in owned:
            if thing in seen:
                raise ValueError(f"augment ops {seen[thing]} and {op.name} both have the {thing}")
            seen[thing] = op.name
        if op.kind == "geometry" and op.place not in _PLACES:
            raise ValueError(f"augment op {op.name}: place {op.place!r} is not one of {_PLACES}")
    for i, op in enumerate(ops):
        for other in ops[i + 1 :]:
            for use in op.streams:
                if any(use.overlaps(theirs) for theirs in other.streams):
                    raise ValueError(
                        f"augment ops {op.name} and {other.name} both draw from stream "
                        f"{use.stream:#x} (the same columns): give {other.name} its own"
                    )
    kinds = [("geometry", "pixel", "batch").index(op.kind) for op in ops]
    if kinds != sorted(kinds):
        raise ValueError("augment ops must be listed geometry first, then pixel, then batch")
    sources = [op.name for op in ops if op.kind == "geometry" and op.place == "source"]
    if len(sources) != 1:
        raise ValueError(f"one geometry op must pick the source box, not {sources}")
    batch = [op.name for op in ops if op.kind == "batch"]
    if len(batch) > 1:
        raise ValueError(f"one batch op at most (labels become soft once), not {batch}")


check_registry(REGISTRY)

GEOMETRY_OPS: tuple[GeometryOp, ...] = tuple(op for op in REGISTRY if isinstance(op, GeometryOp))
PIXEL_OPS: tuple[PixelOp, ...] = tuple(op for op in REGISTRY if isinstance(op, PixelOp))
BATCH_OPS: tuple[BatchOp, ...] = tuple(op for op in REGISTRY if isinstance(op, BatchOp))
PER_IMAGE_OPS: tuple[AugmentOp, ...] = GEOMETRY_OPS + PIXEL_OPS


def get(name: str) -> AugmentOp:
    """The registered op called ``name``; ``UnknownAugmentOpError`` lists the valid ones."""
    for op in REGISTRY:
        if op.name == name:
            return op
    raise UnknownAugmentOpError(
        f"unknown augmentation op {name!r}: the ops are {', '.join(op.name for op in REGISTRY)}"
    )


def config_fields() -> Fields:
    """Every op's config fields, in registry order."""
    return {name: spec for op in REGISTRY for name, spec in op.fields.items()}

"""The ``augment`` section: ImageDataGenerator's options with their meaning, plus random
resized crop, colour jitter, random erasing, RandAugment and batch-level MixUp / CutMix.
Pure (``tljob.augment`` applies it).

Every op's options are declared by the op itself (``tljob.augment.ops``: one module per op,
its ``fields``); this module adds the section-wide settings (``preset``, ``where``,
``seed``, and the warps' ``fill_mode`` / ``cval``) and composes the section with pydantic's
``create_model``, in the reference's order (``REFERENCE_ORDER``), so the schema, the saved
configs and ``tljob config --reference`` list the options as they always have.

A named ``preset`` supplies every option the user leaves out: the effective section is the
field defaults, then the preset's values, then the options written in YAML, then ``--set``
(``tljob.config.load`` keeps track of which options the user wrote). A saved config has
every option written out, so it reads back equal whatever preset it names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model, model_validator

from tljob.augment import ops
from tljob.augment.ops import zoom
from tljob.augment.ops.base import Range
from tljob.config._base import _Section, merge_trees

FillMode = Literal["nearest", "constant", "reflect", "wrap"]
PresetName = Literal["none", "seed", "light", "randaugment"]
WhereName = Literal["data", "model"]

# Each preset's options; everything it does not name keeps the field default (off).
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    # The classic Keras recipe's ImageDataGenerator.
    "seed": {
        "rotation_range": 40.0,
        "width_shift_range": 0.2,
        "height_shift_range": 0.2,
        "shear_range": 0.2,
        "zoom_range": 0.2,
        "horizontal_flip": True,
        "fill_mode": "nearest",
    },
    "light": {
        "random_resized_crop": {"enabled": True, "scale": (0.5, 1.0)},
        "horizontal_flip": True,
    },
    "randaugment": {
        "random_resized_crop": {"enabled": True},
        "horizontal_flip": True,
        "randaugment": {"num_ops": 2, "magnitude": 9},
        "random_erasing": {"probability": 0.25},
    },
}

# The warps' fill, shared by the geometry ops, RandAugment and the in-model layers.
FILL_FIELDS: dict[str, tuple[Any, Any]] = {
    "fill_mode": (
        FillMode,
        Field(
            "nearest",
            description="How points outside the image are filled: nearest (edge pixel), "
            "constant (cval), reflect, wrap.",
        ),
    ),
    "cval": (
        float,
        Field(0.0, ge=0.0, le=255.0, description="Fill value for fill_mode constant, 0..255."),
    ),
}

# What `where: model` can run (Keras preprocessing layers), by option; the rest refuse.
MODEL_SIDE_OPTIONS: tuple[str, ...] = (
    *(option for op in ops.GEOMETRY_OPS for option in op.model_side),
    *FILL_FIELDS,
    *(option for op in ops.PIXEL_OPS for option in op.model_side),
)

# The order the reference (README), the schema and saved configs list the options in, as
# published; the fields of an op added later follow in registry order.
REFERENCE_ORDER = (
    "rotation_range",
    "width_shift_range",
    "height_shift_range",
    "shear_range",
    "zoom_range",
    "horizontal_flip",
    "vertical_flip",
    "fill_mode",
    "cval",
    "brightness_range",
    "channel_shift_range",
    "random_resized_crop",
    "color_jitter",
    "random_erasing",
    "randaugment",
    "mixup_alpha",
    "cutmix_alpha",
)


class _AugmentBase(_Section):
    """The section-wide settings and rules; ``AugmentSection`` adds every op's options."""

    preset: PresetName = Field(
        "none",
        description="Named set of options that fills every option not written: none (off), "
        "seed (the classic recipe: rotation 40, shifts 0.2, shear 0.2, zoom 0.2, horizontal "
        "flip, fill nearest), light (random resized crop of 50-100 % and horizontal flip), "
        "randaugment (random resized crop, flip, RandAugment N=2 M=9, erasing 0.25).",
    )
    where: WhereName = Field(
        "data",
        description="Where training images are augmented: data (Ray Data's CPU tasks, "
        "every option) or model (Keras preprocessing layers on the accelerator, for clusters "
        "short of CPU: flips, rotation, shifts, zoom, brightness and contrast only). MixUp / "
        "CutMix always run in data.",
    )
    seed: int | None = Field(
        None,
        description="Seed of the random views: the view of image i in epoch e depends only "
        "on (seed, e, i). Empty means `data.seed`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, tree: Any) -> Any:
        if not isinstance(tree, dict):
            return tree
        preset = tree.get("preset", "none")
        if preset not in PRESETS:
            return tree  # the field's own rule names the valid presets
        return merge_trees(PRESETS[preset], tree)

    @model_validator(mode="after")
    def _model_side(self) -> Any:
        if self.where == "model":
            for option, value in self.options_set().items():
                if option not in MODEL_SIDE_OPTIONS:
                    raise ValueError(
                        f"`{option}` ({value}) cannot run inside the model (`where` is "
                        "'model': Keras preprocessing layers, which only do "
                        f"{', '.join(MODEL_SIDE_OPTIONS)}): turn it off, or set `where` to "
                        "'data'"
                    )
        return self

    @property
    def zoom_bounds(self) -> Range:
        """``zoom_range`` as [lower, upper]."""
        return zoom.bounds(self.zoom_range)

    @property
    def soft_labels(self) -> bool:
        """MixUp or CutMix is on: labels are class probabilities, not indices."""
        return any(op.batch_options_on(self) for op in ops.BATCH_OPS)

    def options_set(self) -> dict[str, Any]:
        """Every per-image option that is on, by dotted name (MixUp/CutMix excluded: they
        act on batches), e.g. ``{"rotation_range": 40.0, "horizontal_flip": True}``, in the
        section's field order. Each op says which of its options are on
        (``options_on``)."""
        on = {name: v for op in ops.PER_IMAGE_OPS for name, v in op.options_on(self).items()}
        order = list(type(self).model_fields)
        return dict(sorted(on.items(), key=lambda item: order.index(item[0].split(".")[0])))

    @property
    def active(self) -> bool:
        """Any per-image option is on."""
        return bool(self.options_set())


def _option_fields() -> dict[str, tuple[Any, Any]]:
    """Every op's fields and the fill's, in ``REFERENCE_ORDER`` (then registry order)."""
    fields = {**FILL_FIELDS, **ops.config_fields()}
    missing = [name for name in REFERENCE_ORDER if name not in fields]
    if missing:
        raise RuntimeError(f"REFERENCE_ORDER names {missing}, which no augment op declares")
    rank = {name: i for i, name in enumerate(REFERENCE_ORDER)}
    names = sorted(fields, key=lambda name: rank.get(name, len(rank)))
    return {name: fields[name] for name in names}


AugmentSection = create_model(
    "AugmentSection",
    __base__=_AugmentBase,
    __module__=__name__,
    **_option_fields(),
)

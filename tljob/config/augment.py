"""The ``augment`` section: ImageDataGenerator's options with their meaning, plus random
resized crop, colour jitter, random erasing, RandAugment and batch-level MixUp / CutMix.
Pure (``tljob.augment`` applies it).

A named ``preset`` supplies every option the user leaves out: the effective section is the
field defaults, then the preset's values, then the options written in YAML, then ``--set``
(``tljob.config.load`` keeps track of which options the user wrote). A saved config has
every option written out, so it reads back equal whatever preset it names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tljob.config._base import _Section, merge_trees

FillMode = Literal["nearest", "constant", "reflect", "wrap"]
PresetName = Literal["none", "seed", "light", "randaugment"]
WhereName = Literal["data", "model"]
ErasingValue = Literal["random", "zero"]

Range = tuple[float, float]


def _ordered(value: Range, low: float, high: float | None = None) -> Range:
    lo, hi = value
    if lo > hi:
        raise ValueError("the first bound must be <= the second")
    if lo < low or (high is not None and hi > high):
        upper = f" and <= {high}" if high is not None else ""
        raise ValueError(f"bounds must be >= {low}{upper}")
    return value


def _aspect_ratios(value: Range) -> Range:
    _ordered(value, 0.0)
    if value[0] <= 0.0:
        raise ValueError("the aspect ratio must be > 0")
    return value


class ResizedCropSection(_Section):
    enabled: bool = Field(
        False,
        description="Crop a random area of the stored image and resize it to the training "
        "size, as torchvision's RandomResizedCrop (before the affine options above).",
    )
    scale: Range = Field(
        (0.08, 1.0), description="Range of the crop's area, as a fraction of the image's."
    )
    ratio: Range = Field(
        (3 / 4, 4 / 3), description="Range of the crop's width / height (drawn log-uniformly)."
    )

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: Range) -> Range:
        _ordered(value, 0.0, 1.0)
        if value[0] <= 0.0:
            raise ValueError("the area fraction must be > 0")
        return value

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: Range) -> Range:
        return _aspect_ratios(value)


class ColorJitterSection(_Section):
    contrast: float = Field(
        0.0,
        ge=0.0,
        description="Contrast factor drawn from [max(0, 1 - c), 1 + c] (torchvision's "
        "ColorJitter); 0 leaves contrast alone.",
    )
    saturation: float = Field(
        0.0,
        ge=0.0,
        description="Saturation factor drawn from [max(0, 1 - s), 1 + s]; 0 leaves it alone.",
    )
    hue: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="Hue shift drawn from [-h, h], as a fraction of the colour circle; 0 "
        "leaves it alone.",
    )


class RandomErasingSection(_Section):
    probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Chance that one random rectangle of an image is erased (Zhong et al.); "
        "0 is off.",
    )
    scale: Range = Field(
        (0.02, 0.33), description="Range of the rectangle's area, as a fraction of the image's."
    )
    ratio: Range = Field(
        (0.3, 3.3), description="Range of the rectangle's width / height (log-uniform)."
    )
    value: ErasingValue = Field(
        "random", description="What fills the rectangle: random pixels, or zeros."
    )

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: Range) -> Range:
        return _ordered(value, 0.0, 1.0)

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: Range) -> Range:
        return _aspect_ratios(value)


class RandAugmentSection(_Section):
    num_ops: int = Field(
        0, ge=0, le=14, description="RandAugment's N: operations applied per image; 0 is off."
    )
    magnitude: int = Field(
        9, ge=0, le=30, description="RandAugment's M: strength of every operation, 0..30."
    )


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

# What `where: model` can run (Keras preprocessing layers), by option; the rest refuse.
MODEL_SIDE_OPTIONS = (
    "rotation_range",
    "width_shift_range",
    "height_shift_range",
    "zoom_range",
    "horizontal_flip",
    "vertical_flip",
    "fill_mode",
    "cval",
    "brightness_range",
    "color_jitter.contrast",
)


class AugmentSection(_Section):
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
    rotation_range: float = Field(
        0.0, ge=0.0, le=180.0, description="Degrees; rotation drawn from [-r, r]."
    )
    width_shift_range: float = Field(
        0.0,
        ge=0.0,
        description="Horizontal shift drawn from [-w, w]: a fraction of the width when < 1, "
        "pixels (of the training size) when >= 1.",
    )
    height_shift_range: float = Field(
        0.0,
        ge=0.0,
        description="Vertical shift drawn from [-h, h]: a fraction of the height when < 1, "
        "pixels when >= 1.",
    )
    shear_range: float = Field(
        0.0,
        ge=0.0,
        le=90.0,
        description="Shear angle in degrees (counter-clockwise), drawn from [-s, s], as "
        "ImageDataGenerator (whose 0.2 is 0.2 degrees).",
    )
    zoom_range: float | Range = Field(
        0.0,
        description="Zoom drawn for width and height independently from [1 - z, 1 + z] "
        "(or from [lower, upper]); above 1 shows more of the image (zooms out), as "
        "ImageDataGenerator.",
    )
    horizontal_flip: bool = Field(False, description="Mirror left-right with chance 1/2.")
    vertical_flip: bool = Field(False, description="Mirror top-bottom with chance 1/2.")
    fill_mode: FillMode = Field(
        "nearest",
        description="How points outside the image are filled: nearest (edge pixel), "
        "constant (cval), reflect, wrap.",
    )
    cval: float = Field(
        0.0, ge=0.0, le=255.0, description="Fill value for fill_mode constant, 0..255."
    )
    brightness_range: Range | None = Field(
        None,
        description="Brightness factor drawn from [lower, upper] (1 keeps the image); empty "
        "is off.",
    )
    channel_shift_range: float = Field(
        0.0,
        ge=0.0,
        le=255.0,
        description="Intensity drawn from [-c, c] and added to every channel, clipped to the "
        "image's own range (ImageDataGenerator's channel shift).",
    )
    random_resized_crop: ResizedCropSection = Field(
        default_factory=ResizedCropSection, description="Random resized crop."
    )
    color_jitter: ColorJitterSection = Field(
        default_factory=ColorJitterSection, description="Contrast, saturation and hue jitter."
    )
    random_erasing: RandomErasingSection = Field(
        default_factory=RandomErasingSection, description="Random erasing."
    )
    randaugment: RandAugmentSection = Field(
        default_factory=RandAugmentSection, description="RandAugment (Cubuk et al.)."
    )
    mixup_alpha: float = Field(
        0.0,
        ge=0.0,
        description="MixUp's Beta(alpha, alpha) within each batch of the stream; 0 is off. "
        "Labels become soft (class probabilities) and the loss follows.",
    )
    cutmix_alpha: float = Field(
        0.0,
        ge=0.0,
        description="CutMix's Beta(alpha, alpha) within each batch of the stream; 0 is off. "
        "With MixUp also on, each batch uses one of the two, chosen at random.",
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

    @field_validator("zoom_range")
    @classmethod
    def _zoom(cls, value: float | Range) -> float | Range:
        if isinstance(value, tuple):
            _ordered(value, 0.0)
            if value[0] <= 0.0:
                raise ValueError("zoom factors must be > 0")
        elif not 0.0 <= value < 1.0:
            raise ValueError("a single zoom range must be >= 0 and < 1")
        return value

    @field_validator("brightness_range")
    @classmethod
    def _brightness(cls, value: Range | None) -> Range | None:
        return None if value is None else _ordered(value, 0.0)

    @model_validator(mode="after")
    def _model_side(self) -> AugmentSection:
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
        if isinstance(self.zoom_range, tuple):
            return self.zoom_range
        return (1.0 - self.zoom_range, 1.0 + self.zoom_range)

    @property
    def soft_labels(self) -> bool:
        """MixUp or CutMix is on: labels are class probabilities, not indices."""
        return self.mixup_alpha > 0.0 or self.cutmix_alpha > 0.0

    def options_set(self) -> dict[str, Any]:
        """Every per-image option that is on, by dotted name (MixUp/CutMix excluded: they
        act on batches), e.g. ``{"rotation_range": 40.0, "horizontal_flip": True}``."""
        on: dict[str, Any] = {}
        default = AugmentSection.model_construct()
        for name in (
            "rotation_range",
            "width_shift_range",
            "height_shift_range",
            "shear_range",
            "horizontal_flip",
            "vertical_flip",
            "brightness_range",
            "channel_shift_range",
        ):
            if getattr(self, name) != getattr(default, name):
                on[name] = getattr(self, name)
        if self.zoom_bounds != (1.0, 1.0):
            on["zoom_range"] = self.zoom_range
        if self.random_resized_crop.enabled:
            on["random_resized_crop.enabled"] = True
        for name in ("contrast", "saturation", "hue"):
            if getattr(self.color_jitter, name) > 0.0:
                on[f"color_jitter.{name}"] = getattr(self.color_jitter, name)
        if self.random_erasing.probability > 0.0:
            on["random_erasing.probability"] = self.random_erasing.probability
        if self.randaugment.num_ops > 0:
            on["randaugment.num_ops"] = self.randaugment.num_ops
        return on

    @property
    def active(self) -> bool:
        """Any per-image option is on."""
        return bool(self.options_set())

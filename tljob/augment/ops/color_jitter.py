"""``color_jitter``: torchvision's ``ColorJitter`` contrast, saturation and hue (in that
fixed order: ``colour.apply_jitter``). In the model, contrast alone:
``RandomContrast((min(c, 1), c))``, factors from [max(0, 1 - c), 1 + c] as torchvision,
applied around each channel's mean (torchvision uses the grey mean), clipped to
[0, 255]."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from tljob.augment import colour
from tljob.augment.ops.base import Draw, LayerSpec, PixelOp, StreamUse
from tljob.config._base import _Section

if TYPE_CHECKING:
    from tljob.config.augment import AugmentSection

STREAM_COLOR_JITTER = 103
_OPTIONS = ("contrast", "saturation", "hue")


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


class ColorJitter(PixelOp):
    name = "color_jitter"
    fields = {
        "color_jitter": (
            ColorJitterSection,
            Field(
                default_factory=ColorJitterSection,
                description="Contrast, saturation and hue jitter.",
            ),
        )
    }
    draws = _OPTIONS
    streams = (StreamUse(STREAM_COLOR_JITTER, count=3),)
    model_side = ("color_jitter.contrast",)

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        j = section.color_jitter
        return {f"color_jitter.{n}": getattr(j, n) for n in _OPTIONS if getattr(j, n) > 0.0}

    def draw(self, section, seed, epoch, keys, height, width) -> Draw:
        j = section.color_jitter
        u = self.streams[0].uniforms(seed, epoch, keys)
        return dict(
            zip(_OPTIONS, colour.draw_jitter(u, j.contrast, j.saturation, j.hue), strict=True)
        )

    def apply(self, section, images, draw, seed, epoch, keys):
        return colour.apply_jitter(images, *(draw[n] for n in _OPTIONS))

    def describe(self, section, draw, i, height, width) -> str | None:
        c, s, h = (float(draw[n][i]) for n in _OPTIONS)
        j = section.color_jitter
        named = ((j.contrast, f"c{c:.2f}"), (j.saturation, f"s{s:.2f}"), (j.hue, f"h{h:+.2f}"))
        return "jitter " + " ".join(text for option, text in named if option > 0)

    def model_layer(self, section: AugmentSection, image_size: int) -> LayerSpec | None:
        c = section.color_jitter.contrast
        return ("RandomContrast", {"factor": (min(c, 1.0), c)}) if c > 0.0 else None

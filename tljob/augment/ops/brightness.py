"""``brightness_range``: ImageDataGenerator's random brightness (PIL's brightness
enhancer: pixels times a factor, ``tljob.augment.colour.apply_brightness``). In the model:
``RandomBrightnessScale`` (``tljob.nn.layers``), the same product clipped to [0, 255];
Keras' ``RandomBrightness`` adds an offset instead, which is not the same view."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, Field

from tljob.augment import colour
from tljob.augment.ops.base import Draw, LayerSpec, PixelOp, Range, StreamUse, ordered

if TYPE_CHECKING:
    from tljob.config.augment import AugmentSection

STREAM_BRIGHTNESS = 101


def _valid_range(value: Range | None) -> Range | None:
    return None if value is None else ordered(value, 0.0)


class Brightness(PixelOp):
    name = "brightness"
    fields = {
        "brightness_range": (
            Annotated[Range | None, AfterValidator(_valid_range)],
            Field(
                None,
                description="Brightness factor drawn from [lower, upper] (1 keeps the image); "
                "empty is off.",
            ),
        )
    }
    draws = ("brightness",)
    streams = (StreamUse(STREAM_BRIGHTNESS, count=1),)
    model_side = ("brightness_range",)

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        value = section.brightness_range
        return {"brightness_range": value} if value is not None else {}

    def draw(self, section, seed, epoch, keys, height, width) -> Draw:
        u = self.streams[0].uniforms(seed, epoch, keys)
        return {"brightness": colour.draw_range(u[:, 0], *section.brightness_range)}

    def apply(self, section, images, draw, seed, epoch, keys):
        return colour.apply_brightness(images, draw["brightness"])

    def describe(self, section, draw, i, height, width) -> str | None:
        return f"bright {draw['brightness'][i]:.2f}"

    def model_layer(self, section: AugmentSection, image_size: int) -> LayerSpec | None:
        if section.brightness_range is None:
            return None
        low, high = section.brightness_range
        return ("RandomBrightnessScale", {"lower": low, "upper": high})

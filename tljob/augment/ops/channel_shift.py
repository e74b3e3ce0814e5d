"""``channel_shift_range``: ImageDataGenerator's channel shift (one intensity added to
every channel, clipped to the image's own range: ``colour.apply_channel_shift``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from tljob.augment import colour
from tljob.augment.ops.base import Draw, PixelOp, StreamUse

if TYPE_CHECKING:
    from tljob.config.augment import AugmentSection

STREAM_CHANNEL_SHIFT = 102


class ChannelShift(PixelOp):
    name = "channel_shift"
    fields = {
        "channel_shift_range": (
            float,
            Field(
                0.0,
                ge=0.0,
                le=255.0,
                description="Intensity drawn from [-c, c] and added to every channel, clipped "
                "to the image's own range (ImageDataGenerator's channel shift).",
            ),
        )
    }
    draws = ("channel_shift",)
    streams = (StreamUse(STREAM_CHANNEL_SHIFT, count=1),)

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        c = section.channel_shift_range
        return {"channel_shift_range": c} if c != 0.0 else {}

    def draw(self, section, seed, epoch, keys, height, width) -> Draw:
        c = section.channel_shift_range
        u = self.streams[0].uniforms(seed, epoch, keys)
        return {"channel_shift": colour.draw_range(u[:, 0], -c, c)}

    def apply(self, section, images, draw, seed, epoch, keys):
        return colour.apply_channel_shift(images, draw["channel_shift"])

    def describe(self, section, draw, i, height, width) -> str | None:
        return f"shift {draw['channel_shift'][i]:+.0f}"

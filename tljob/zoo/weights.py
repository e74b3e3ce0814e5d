"""Where a backbone's initial weights come from: ``model.weights`` parsed once, and the local
file it names. Pure; tljob never downloads weights at run time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tljob.errors import UserError
from tljob.zoo.registry import BackboneSpec


@dataclass(frozen=True)
class WeightsSource:
    """``model.weights`` parsed: random init, the Keras cache's ImageNet file, or a file."""

    kind: Literal["none", "imagenet", "file"]
    path: str = ""  # for kind == "file"

    @classmethod
    def parse(cls, text: str) -> WeightsSource:
        if text in ("none", "imagenet"):
            return cls(text)
        if text.endswith(".h5"):
            return cls("file", text)
        raise ValueError("must be 'none', 'imagenet' or a path ending in .h5 / .weights.h5")

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"

    def __str__(self) -> str:
        return self.path if self.kind == "file" else self.kind


def keras_cache_dir() -> Path:
    """Directory Keras looks in for downloaded weights (``$KERAS_HOME/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


class WeightsUnavailableError(UserError, FileNotFoundError):
    """Requested backbone weights are not on this machine (tljob never downloads them)."""


def resolve_weights_file(spec: BackboneSpec, weights: WeightsSource, image_size: int) -> str | None:
    """Turn ``model.weights`` into a local file path, or None for random initialisation.

    ``imagenet`` is read from the Keras cache only. A missing file raises
    ``WeightsUnavailableError`` naming the exact file to pre-seed and where it is published,
    instead of attempting a download.
    """
    if weights.kind == "none":
        return None
    if weights.kind == "imagenet":
        published = spec.imagenet_weights(image_size)
        path = keras_cache_dir() / published.name
        if not path.is_file():
            raise WeightsUnavailableError(
                f"`model.weights` ('imagenet'): ImageNet weights for backbone {spec.name!r} "
                f"are not in the Keras cache, and tljob never downloads at run time. "
                f"Pre-seed the file {path} (Keras cache dir {path.parent}; set KERAS_HOME "
                f"to use another), e.g. by copying {published.url} "
                "from a machine with network access; or set `model.weights` to 'none' or "
                "to a local .h5 file."
            )
        return str(path)
    if not Path(weights.path).is_file():
        raise WeightsUnavailableError(
            f"`model.weights` ({weights.path!r}): no such file; give a readable no-top "
            f".h5 / .weights.h5 weights file for backbone {spec.name!r}"
        )
    return weights.path

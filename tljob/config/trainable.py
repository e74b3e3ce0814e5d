"""A stage's ``trainable`` setting, parsed once: 'head', 'top_layers:N' (or 'top:N'),
'top_blocks:K' or 'all'. ``tljob.nn.model.set_trainable`` applies it; block boundaries come
from the backbone's registry entry (``tljob.zoo``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

TRAINABLE_PATTERN = re.compile(r"^(head|all|(top|top_layers|top_blocks):([1-9][0-9]*))$")


@dataclass(frozen=True)
class Trainable:
    """What a stage trains: the head only; the head and the last ``layers`` backbone layers
    (kind "top", written 'top_layers:N', or 'top:N', its older spelling, which is kept as
    written); the head and the last ``blocks`` blocks of the backbone, per the registry's
    block boundaries ('top_blocks:K'); or everything ('all')."""

    kind: Literal["head", "top", "top_blocks", "all"]
    layers: int = 0  # for kind == "top"
    blocks: int = 0  # for kind == "top_blocks"
    # how a "top" kind was written: 'top' or 'top_layers' (same meaning; saved as written)
    spelling: str = field(default="top", compare=False, repr=False)

    @classmethod
    def parse(cls, text: Any) -> Trainable:
        if isinstance(text, Trainable):
            return text
        match = TRAINABLE_PATTERN.match(text) if isinstance(text, str) else None
        if not match:
            raise ValueError(
                "must be 'head', 'all', 'top_layers:N' (or 'top:N') or 'top_blocks:K' "
                "with N, K >= 1"
            )
        kind, count = match.group(2), match.group(3)
        if kind == "top_blocks":
            return cls("top_blocks", blocks=int(count))
        if kind:
            return cls("top", layers=int(count), spelling=kind)
        return cls(match.group(1))

    def __str__(self) -> str:
        if self.kind == "top":
            return f"{self.spelling}:{self.layers}"
        if self.kind == "top_blocks":
            return f"top_blocks:{self.blocks}"
        return self.kind

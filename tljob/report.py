"""Plain words for what went wrong with an input file.

Pure: imports neither Ray nor TensorFlow.
"""

from __future__ import annotations

import re

_OBJECT_REPR = re.compile(r"<[^<>]*(?:\bobject\b| at 0x)[^<>]*>|<\w+(?:\.\w+)+[^<>]*>")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")


def clean_reason(text: str) -> str:
    """``text`` without object reprs (``<_io.BytesIO object at 0x7f…>``) or memory
    addresses, which differ on every run and mean nothing to the reader."""
    text = _ADDRESS.sub("", _OBJECT_REPR.sub("", text))
    return re.sub(r"\s+", " ", text).strip().rstrip(":").strip()

"""Backbones that are not plain ``tf_keras.applications`` constructors, by name.

A ``BackboneSpec`` with ``builder`` set is built by ``BUILDERS[builder]``, called like a
Keras application: ``(include_top=False, weights=<file path or None>,
input_shape=(side, side, 3))``, returning a no-top ``tf_keras.Model``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tljob.nn.keras import tf_keras

BUILDERS: dict[str, Callable[..., tf_keras.Model]] = {}


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a builder under ``name``."""

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        BUILDERS[name] = fn
        return fn

    return add


# The builders' modules register themselves on import (kept last: they import ``register``
# from here).
from tljob.nn import alexnet, torchvision_mobilenet  # noqa: E402, F401, I001

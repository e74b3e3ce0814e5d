"""What every config section shares (pure)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    # allow_inf_nan=False: inf/nan in any float field (learning rates, dropout, CPUs, ...)
    # is a config error, not a run that trains on nothing or never schedules.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def merge_trees(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; lists and scalars in ``top`` replace those in ``base``."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_trees(merged[key], value)
        else:
            merged[key] = value
    return merged

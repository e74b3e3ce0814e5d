"""What every config section shares (pure)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    # allow_inf_nan=False: inf/nan in any float field (learning rates, dropout, CPUs, ...)
    # is a config error, not a run that trains on nothing or never schedules.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

"""A job from the command line's point of view: validate it (pure, before Ray), then run it.

``resolve_job`` is pure. ``run_job`` and ``prepare_job`` import the Ray side
(``tljob.data.pipeline``, ``tljob.run.driver``) only when called, so ``tljob.cli`` and
``tljob.demo`` stay light.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tljob.config import JobConfig, load_config
from tljob.zoo import get_backbone, resolve_weights_file


def resolve_job(config_path: str | None, overrides: Sequence[str]) -> JobConfig:
    """Load and validate the config, and check weights exist, all before Ray starts."""
    job = load_config(config_path, list(overrides))
    resolve_weights_file(get_backbone(job.model.backbone), job.model.weights, job.image_size)
    return job


def run_job(job: JobConfig, verbose: bool = False) -> dict[str, Any]:
    """List the data (cheap, no Ray), then train on Ray. Returns the run summary
    (``verbose``: also show Ray's own logs)."""
    from tljob.data.sources import list_source
    from tljob.run import driver  # Ray and TensorFlow load here, not for config errors

    listing = list_source(job.data)
    outcome = driver.run_job_driver_fn(job, listing, verbose=verbose)
    return {**outcome.summary, "run_dir": outcome.run_dir}


def prepare_job(job: JobConfig, verbose: bool = False) -> dict[str, Any]:
    """List the data and prepare its shards on Ray (or find them already prepared), without
    training: what ``train`` does first. Returns ``PreparedData.report()`` (no TensorFlow).
    Raises ``DataError`` (exit 2) for unusable data or too many bad images."""
    from tljob.data.pipeline import prepare_data
    from tljob.data.sources import list_source
    from tljob.run.connect import ensure_ray

    listing = list_source(job.data)
    ensure_ray(verbose)
    return prepare_data(job, listing).report()

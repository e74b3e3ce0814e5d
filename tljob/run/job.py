"""A job from the command line's point of view: validate it (pure, before Ray), then run it.

``resolve_job`` is pure. ``run_job`` and ``prepare_job`` import the Ray side
(``tljob.data.pipeline``, ``tljob.run.driver``) only when called, so ``tljob.cli`` and
``tljob.demo`` stay light.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tljob.config import JobConfig, load_config
from tljob.zoo import check_weights_available, get_backbone, resolve_weights_file
from tljob.zoo.convert import ConvertedWeights

if TYPE_CHECKING:
    from tljob.data.plan import DataPlan


def resolve_job(config_path: str | None, overrides: Sequence[str]) -> JobConfig:
    """Load and validate the config, check weights exist, and make the job's S3 settings
    (its ``s3`` section over the AWS environment) this process's: all before Ray starts."""
    job = load_config(config_path, list(overrides))
    check_weights_available(
        get_backbone(job.model.backbone), job.model.weights, job.image_size, job.model.offline
    )
    from tljob import storage

    storage.configure(storage.S3Settings.from_config(job.s3))
    return job


def _convert(converted: ConvertedWeights, source: Path, out: Path) -> None:
    from tljob.nn.torchvision_mobilenet import convert_for  # TensorFlow: only to convert

    convert_for(converted, source, out)


def resolve_weights(job: JobConfig) -> str | None:
    """``model.weights`` as one local file on this machine (the driver), or None: found in
    the Keras cache, downloaded, converted or fetched from s3:// here, once; the driver
    ships it to the workers."""
    spec = get_backbone(job.model.backbone)
    return resolve_weights_file(
        spec, job.model.weights, job.image_size, job.model.offline, convert=_convert
    )


def plan_checked(job: JobConfig) -> DataPlan:
    """Check the object store (s3:// only), list the data and plan it once, its split
    checked to fill a batch: seconds, before Ray and TensorFlow load. Raises ``UserError``
    (exit 2)."""
    from tljob import preflight
    from tljob.data.plan import plan_data
    from tljob.data.sources import list_source

    preflight.check_storage(job)
    return plan_data(job, list_source(job.data))


def run_job(job: JobConfig, verbose: bool = False, lock_wait_s: float = 0.0) -> dict[str, Any]:
    """``plan_checked`` (cheap, no Ray), then train on Ray. Returns the run summary
    (``verbose``: also show Ray's own logs; ``lock_wait_s``: how long a run lock that is
    still alive is waited for before the run is refused)."""
    from tljob import output

    data_plan = plan_checked(job)
    with output.native_logs_hidden(verbose):
        weights_file = resolve_weights(job)
        from tljob.run import driver  # Ray and TensorFlow load here, not for data errors

    outcome = driver.run_job_driver_fn(
        job, data_plan, verbose=verbose, weights_file=weights_file, lock_wait_s=lock_wait_s
    )
    return {**outcome.summary, "run_dir": outcome.run_dir}


def prepare_job(job: JobConfig, verbose: bool = False) -> dict[str, Any]:
    """List the data and prepare its shards on Ray (or find them already prepared), without
    training: what ``train`` does first. Returns ``PreparedData.report()`` (no TensorFlow).
    Raises ``DataError`` (exit 2) for unusable data or too many bad images."""
    from tljob import preflight, storage
    from tljob.data.pipeline import prepare_data
    from tljob.data.plan import plan_data
    from tljob.data.sources import list_source
    from tljob.run.connect import ensure_ray

    # The job's ``s3`` section over the AWS environment, as ``resolve_job`` does for train.
    storage.configure(storage.S3Settings.from_config(job.s3))
    preflight.check_storage(job)
    listing = list_source(job.data)
    ensure_ray(verbose)
    return prepare_data(job, plan_data(job, listing, batches=False)).report()

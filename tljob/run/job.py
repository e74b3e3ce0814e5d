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
from tljob.zoo import check_weights_available, get_backbone, resolve_weights_file, same_layers
from tljob.zoo.convert import ConvertedWeights
from tljob.zoo.weights_record import read_record

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
    ships it to the workers.

    A file must be for the configured backbone: one whose tljob record names another, or
    that holds the classifier, is refused (``WeightsMismatchError``, exit 2); one without a
    record (a Keras ``save_weights`` file) is compared layer by layer with the backbone,
    built here without weights, and refused naming the first layer that differs."""
    from tljob import output

    log = output.logger("weights")
    spec = get_backbone(job.model.backbone)
    weights = job.model.weights
    path = resolve_weights_file(spec, weights, job.image_size, job.model.offline, _convert)
    if path is None or weights.kind != "file":
        return path
    record = read_record(path, f"`model.weights` ({weights.path!r})")
    if record is not None:
        source = record.source and f", converted from {record.source}"
        source += record.source_sha256 and f" (sha256 {record.source_sha256})"
        log.info(f"weights: {weights.path} is for backbone {record.backbone}{source}")
        return path
    from tljob.nn.model import check_weights_file  # TensorFlow: builds the backbone

    check_weights_file(spec, weights, path, job.image_size)
    twins = same_layers(spec.name)
    alike = (
        f"; backbone(s) {', '.join(twins)} have the very same layers, so the file could be "
        f"for them as well: make sure it holds weights for {spec.name}"
        if twins
        else ""
    )
    log.info(
        f"weights: {weights.path} carries no tljob record of the backbone it was made for; "
        f"its layers and weight shapes are those of backbone {spec.name}, so it is loaded" + alike
    )
    return path


def plan_checked(job: JobConfig) -> DataPlan:
    """Check the object store (s3:// only), list the data and plan it once, its split
    checked to fill a batch: seconds, before Ray and TensorFlow load (but for a manifest
    with more than ``sources.CLUSTER_LOOKUP_ROWS`` rows without a size, looked at in Ray
    tasks). Raises ``UserError`` (exit 2)."""
    from tljob import preflight
    from tljob.data import sources
    from tljob.data.plan import plan_data

    preflight.check_storage(job)
    with sources.objects_looked_at_by(_look_at_on_ray):
        return plan_data(job, sources.list_source(job.data))


def _look_at_on_ray(uris: Any) -> Any:
    """A big manifest's objects looked at in Ray tasks (``tljob.data.lookup``): Ray is
    joined for it, the only listing that needs it."""
    from tljob.data.lookup import look_at_on_ray
    from tljob.run.connect import ensure_ray

    ensure_ray()
    return look_at_on_ray(uris)


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

"""``tljob train --dry-run``: every check a run makes before it trains, and what it would
do, without training, preparing data or writing into the run directory.

The checks run in a real run's order (``tljob.run.job.run_job``, then
``tljob.run.driver.run_job_driver_fn``) and are the same functions, so a job a run would
refuse is refused here with the same message (exit 2): the config and weights
(``resolve_job``, done by the caller), the object store (``s3://`` only: a list under
``data.source``, and a probe object written and deleted under the run directory), the
listing and the batch check, the run directory (read only: ``lock.check_run_dir``), its
lock (``RunLock.check``) and the resume plan (``plan.read_plan``); then Ray is joined for
the cluster, memory and per-node object-store checks, and the prepared data's fingerprint
(from the listing's sizes and times) says whether shards would be reused or made.

No image is read or decoded, no weights are downloaded, converted or fetched, and nothing
is written into the run directory or the prepared-data folder (no lock, no
``config.yaml``). Pure at import: Ray loads when the cluster is checked.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tljob import preflight, storage
from tljob.config import JobConfig
from tljob.config.features import stage_features
from tljob.data.listing import ImageListing
from tljob.data.plan import DataPlan, plan_data
from tljob.run.lock import RunLock, check_run_dir
from tljob.run.plan import read_plan
from tljob.zoo import get_backbone
from tljob.zoo.weights import describe_weights_plan

Say = Callable[[str], None]
HEADER = "tljob train --dry-run: checks only; nothing is trained, prepared or written"


def checked(name: str, text: str) -> str:
    """The line of a check that passed."""
    return f"ok     {name:<13} {text}"


def would(name: str, text: str) -> str:
    """A line of what the run would do."""
    return f"would  {name:<13} {text}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 'es' if word.endswith('s') else 's'}"


def dry_run(
    job: JobConfig,
    config_path: str | None,
    say: Say = print,
    verbose: bool = False,
    lock_wait_s: float = 0.0,
) -> None:
    """Check ``job`` (already loaded by ``tljob.run.job.resolve_job``) as a run would and
    ``say`` one line per check, then what the run would do. Raises the ``UserError`` the
    run would raise (exit 2)."""
    from tljob.data.sources import list_source

    say(HEADER)
    scaling = job.scaling
    cached = {c.index: c.views for c in stage_features(job) if c.cached}
    stages = ", ".join(
        f"{s.name} {_plural(s.epochs, 'epoch')}"
        + (" on cached features" if i in cached else "")
        + (f" ({cached[i]} views)" if cached.get(i) else "")
        for i, s in enumerate(job.train.stages)
    )
    say(
        checked(
            "config",
            f"{config_path or 'defaults'}: run {job.run.name!r}, backbone "
            f"{job.model.backbone} at {job.image_size} px, "
            f"{_plural(scaling.num_workers, 'worker')}, stages {stages}",
        )
    )
    # as tljob.run.job.plan_checked, a line after each check
    preflight.check_storage(job)
    for line in _storage_lines(job):
        say(line)
    listing = list_source(job.data)
    say(checked("data", _data_text(", ".join(job.data.sources), listing)))
    data_plan = plan_data(job, listing)  # the split and the batch check, as a run makes them
    if data_plan.test_listing is not None:
        test_listing = data_plan.test_listing
        say(checked("test data", _data_text(job.data.test_source or "", test_listing)))
    train, val = data_plan.train, data_plan.val
    steps = preflight.steps_per_epoch(len(train), job.train.batch_size, scaling.num_workers)
    test = f" + {len(data_plan.test)} test" if data_plan.has_test else ""
    say(
        checked(
            "batches",
            f"{len(train)} train + {len(val)} val{test} images; "
            f"{_plural(scaling.num_workers, 'worker')} x `train.batch_size` "
            f"{job.train.batch_size}: {_plural(steps, 'step')} per epoch",
        )
    )
    # what tljob.run.job.resolve_weights would do, doing none of it
    spec = get_backbone(job.model.backbone)
    weights = describe_weights_plan(spec, job.model.weights, job.image_size, job.model.offline)
    say(checked("weights", weights))
    run_dir, exists = check_run_dir(job.run.storage_path, job.run.name)
    say(checked("run directory", f"{run_dir.uri}: " + ("exists" if exists else "would be created")))
    say(checked("run lock", RunLock(run_dir, wait_s=lock_wait_s).check()))
    found = read_plan(run_dir, job, listing.classes)
    say(checked("resume", found.plan.message))
    for name in found.incomplete:
        say(would("remove", f"{name}: incomplete (its upload was interrupted)"))
    _check_on_ray(job, listing, say, verbose)
    say(would("prepare", _prepared_text(job, data_plan)))
    say(
        would(
            "train",
            f"{_plural(len(listing.classes), 'class')} ({', '.join(listing.classes)}); "
            f"stages {stages}; at most {_plural(steps, 'step')} per epoch (images set aside "
            "while preparing lower it)",
        )
    )
    plan = found.plan
    if plan.complete:
        say(would("run", f"train nothing in {run_dir.uri}: every stage has already run"))
    elif plan.checkpoint:
        say(would("run", f"resume in {run_dir.uri} from {plan.checkpoint}"))
    else:
        say(would("run", f"start fresh in {run_dir.uri}"))


def _storage_lines(job: JobConfig) -> list[str]:
    found = preflight.targets(job)
    if not found:
        return [checked("object store", "none used (local paths only)")]
    where = storage.current_settings().describe()
    return [
        checked(
            "object store",
            f"{target.field} {target.uri} at {where}: "
            + ("listed, a probe object written and deleted" if target.write else "listed"),
        )
        for target in found
    ]


def _data_text(source: str, listing: ImageListing) -> str:
    classes = sum(bool(listing.files.get(name)) for name in listing.classes)
    text = f"{source}: {_plural(classes, 'class')}, {_plural(listing.count(), 'image')} listed"
    if listing.quarantined:
        text += f", {len(listing.quarantined)} set aside at listing"
    if listing.listed_again:
        text += f", {len(listing.listed_again)} listed again by a later source"
    if listing.skipped:
        text += f", {len(listing.skipped)} other files skipped"
    return text


def _check_on_ray(job: JobConfig, listing: ImageListing, say: Say, verbose: bool) -> None:
    """Join Ray as the run would; check the cluster, memory and the nodes' object store."""
    from tljob import output

    with output.native_logs_hidden(verbose):
        from tljob.run.connect import check_cluster, ensure_ray
        from tljob.run.storage_check import check_workers_reach_storage

    address = os.environ.get("RAY_ADDRESS") or ""
    ensure_ray(verbose)
    say(checked("ray", f"joined {address}" if address else "started a local Ray for this check"))
    nodes, memory = check_cluster(job, len(listing.classes), listing.count(), say)
    say(
        checked(
            "cluster",
            f"{preflight.describe_cluster(nodes, job.scaling.use_gpu)} can place "
            f"{_plural(job.scaling.num_workers, 'worker')}",
        )
    )
    say(checked("memory", f"a worker needs about {memory.describe()}"))
    lines: list[str] = []
    check_workers_reach_storage(job, say=lines.append)
    for line in lines:
        say(checked("node storage", line))


def _prepared_text(job: JobConfig, data_plan: DataPlan) -> str:
    """Whether shards of this listing and these settings are there, from the plan's
    fingerprint (file sizes and times: no image is read)."""
    from tljob.data.prepared import prepared_dir, read_manifest

    folder = prepared_dir(job.prepared_path, data_plan.fingerprint)
    if read_manifest(folder) is not None:
        return f"reuse the prepared data {folder.uri} (fingerprint unchanged)"
    return f"decode {_plural(len(data_plan.labels_to_read()), 'image')} into {folder.uri}"

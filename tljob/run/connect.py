"""Joining Ray for a driver: the cluster in RAY_ADDRESS, else a local one. Ray, never
TensorFlow (``tljob prepare`` joins Ray without loading a model)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import ray

from tljob import output, preflight, ray_private, storage
from tljob.config import JobConfig
from tljob.run import terminate


def ensure_ray(verbose: bool = False, worker_lines: bool = True) -> None:
    """Join the cluster in RAY_ADDRESS (as under ``ray job submit``), else start a local one.

    With ``worker_lines``, worker output is forwarded to this process (the workers'
    ``[tljob]`` lines reach the job's stdout); a sweep's driver turns it off and prints its
    own line per trial event (``--verbose`` forwards everything). Unless ``verbose``, Ray's
    own console chatter is turned off on both sides (``tljob.output``). Every process of
    the job gets this process's S3 settings (``storage.worker_env()``: non-secret) and the
    cluster's address. A Ray that is already initialised is used as it is."""
    ray_private.check_ray_version()
    output.quiet_ray(verbose)
    if ray.is_initialized():
        return
    if not verbose:
        # Ray's notice that a local cluster uses token authentication (its default): Ray's
        # own business, like its other start-up lines.
        ray_private.silence_auth_notice()
    address = os.environ.get("RAY_ADDRESS") or None
    env = {**output.worker_env(verbose), **storage.worker_env()}
    if address:
        # Ray Train's PlacementGroupCleaner finds its cluster through the state API, which
        # without RAY_ADDRESS fails when the machine runs another Ray ("Found multiple
        # active Ray instances"): a stopped run's workers' CPUs were then never freed.
        env["RAY_ADDRESS"] = address
    ray.init(
        address=address,
        log_to_driver=worker_lines or verbose,
        logging_level=logging.INFO if verbose else logging.WARNING,
        runtime_env={"env_vars": env},
    )
    terminate.reclaim_sigterm()  # ray.init's own handler exits without a word
    if worker_lines:
        output.forward_only_tljob_lines(verbose)


def check_cluster(
    job: JobConfig, num_classes: int, images: int, say: Callable[[str], None]
) -> tuple[list[preflight.Node], preflight.WorkerMemory]:
    """Refuse (exit 2) a job the cluster cannot place or hold in memory, instead of letting
    Ray wait for resources forever; on an autoscaling cluster, wait a bounded time
    (``scaling.resource_wait_seconds``), telling ``say``. Returns the nodes that fit the
    job and the memory estimate of one worker."""
    if job.scaling.resource_wait_seconds > 0:
        request_worker_resources(preflight.resource_request(job.scaling))
    nodes = preflight.wait_for_resources(
        job.scaling, lambda: preflight.nodes_from_ray(ray.nodes()), say=say
    )
    return nodes, preflight.check_memory(job, nodes, num_classes=num_classes, images=images)


_request_stands = [False]  # this process has asked the autoscaler for resources


def request_worker_resources(bundles: list[dict[str, float]]) -> None:
    """Ask the autoscaler for ``bundles`` (``request_resources``). Without a pending
    request an autoscaler sees no demand and adds no nodes; the request stands until
    ``release_resource_request``."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)
    _request_stands[0] = True


def release_resource_request() -> bool:
    """Withdraw this process's standing autoscaler request (``request_resources(bundles=
    [])``), so that the autoscaler removes the nodes it brought up for it once they idle
    (on KubeRay, the GPU pods after their idle timeout). Idempotent; returns whether a
    request was withdrawn. A request left standing pins those nodes for as long as the
    cluster lives."""
    if not _request_stands[0] or not ray.is_initialized():
        return False
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[])
    _request_stands[0] = False
    return True

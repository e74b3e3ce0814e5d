"""Joining Ray for a driver: the cluster in RAY_ADDRESS, else a local one. Ray, never
TensorFlow (``tljob prepare`` joins Ray without loading a model)."""

from __future__ import annotations

import os

import ray

from tljob import output, storage


def ensure_ray(verbose: bool = False) -> None:
    """Join the cluster in RAY_ADDRESS (as under ``ray job submit``), else start a local one.

    Worker output is forwarded to this process (the workers' ``[tljob]`` lines reach the
    job's stdout); unless ``verbose``, Ray's own console chatter is turned off on both
    sides (``tljob.output``). Every process of the job gets this process's S3 settings
    (``storage.worker_env()``: non-secret). A Ray that is already initialised is used as
    it is."""
    output.quiet_ray(verbose)
    if not ray.is_initialized():
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or None,
            log_to_driver=True,
            runtime_env={"env_vars": {**output.worker_env(verbose), **storage.worker_env()}},
        )
        output.forward_only_tljob_lines(verbose)

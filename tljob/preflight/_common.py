"""What the preflight checks share: their exceptions and units (pure)."""

from __future__ import annotations

from tljob.errors import UserError

GIB = 1024**3


class PreflightError(UserError):
    """A job that cannot run as configured; the message names the settings to change."""


class ClusterTooSmallError(PreflightError):
    """The cluster's nodes cannot hold the workers plus the CPUs left for Ray Data."""


class ResourceWaitTimeoutError(ClusterTooSmallError):
    """``scaling.resource_wait_seconds`` passed and the cluster still cannot hold the job."""


class WorkerMemoryError(PreflightError):
    """The workers Ray would place on a node need more memory than the node has."""


class TooFewImagesError(PreflightError):
    """Too few images for one training step, or for every worker to validate on."""

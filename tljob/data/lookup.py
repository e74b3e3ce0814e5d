"""Looking at a manifest's objects in Ray tasks instead of the driver (Ray, no TensorFlow).

A manifest without a ``size`` column needs one ``HEAD`` per row (``tljob.data.sources``):
at a million rows, minutes of requests from 16 threads and a GB of pyarrow ``FileInfo``
objects on the driver. ``look_at_on_ray`` cuts the uris into slices of
``TASK_ROWS`` and looks at each in a Ray task (16 requests in flight each, as the driver
would); the driver only gets back two arrays per slice: the sizes and the folder flags.
The tasks ask for no CPU: they wait on the store, and a sweep's reserved CPUs must not
keep them waiting.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from tljob import output
from tljob.data import sources

TASK_ROWS = 5_000  # uris one task looks at

log = output.logger("data")


@ray.remote(num_cpus=0)
def _look_at_slice(uris: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    return sources.look_at_here(uris)


def look_at_on_ray(uris: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``sources.look_at`` for many uris, in Ray tasks (Ray must be joined): their sizes
    (-1: no such object, or a folder) and folder flags, aligned with ``uris``."""
    starts = range(0, len(uris), TASK_ROWS)
    log.info(
        f"looking at {len(uris):,} objects that the manifest gives no size for, in "
        f"{len(starts)} Ray tasks (a `size` column would skip this)"
    )
    parts = ray.get([_look_at_slice.remote(uris.slice(i, TASK_ROWS)) for i in starts])
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

"""A worker's input from arrays it already holds: the pooled features of a stage on cached
features (``tljob.run.cached_stage``), fed as ``tljob.run.feed`` feeds images held in
memory (training per replica, endless, reordered every epoch), with two differences: a
call of the compiled step runs many training steps (``ARRAY_STEPS_PER_EXECUTION``), since a
step on features costs less than the call and its per-step callbacks; so the validation
rows are also batched per replica, in a known number of steps, which ``fit`` then needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from tljob.run.feed import (
    WorkerInput,
    array_specs,
    class_weighted,
    in_memory_train,
    per_replica,
    per_worker_only,
    stamped,
    training_steps,
)
from tljob.run.input_wait import InputClock

ARRAY_STEPS_PER_EXECUTION = 64  # training steps per call on in-memory features


def in_memory_val_per_replica(
    arrays: tuple[np.ndarray, np.ndarray], batch_size: int, replicas_here: int
) -> tuple[tf.data.Dataset, int]:
    """Every validation row of this worker once, as ``(dataset, steps)``: ``steps`` x
    ``replicas_here`` batches of at most ``batch_size`` rows (sizes differ by at most one),
    so every replica takes a batch at every step; a known number of steps, which fit needs
    when a call runs several steps. For ``per_replica``."""
    rows = len(arrays[1])
    steps = max(1, -(-rows // (batch_size * replicas_here)))
    bounds = np.linspace(0, rows, steps * replicas_here + 1).round().astype(int)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            yield arrays[0][start:end], arrays[1][start:end]

    dataset = tf.data.Dataset.from_generator(batches, output_signature=array_specs(arrays))
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps * replicas_here))
    return per_worker_only(dataset.prefetch(2)), steps


def arrays_input_per_worker(
    train_arrays: tuple[np.ndarray, np.ndarray] | list[tuple[np.ndarray, np.ndarray]],
    val_arrays: tuple[np.ndarray, np.ndarray],
    strategy: Any,
    world_size: int,
    batch_size: int,
    shuffle: int,
    seed: int,
    first_epoch: Callable[[], int],
    class_weights: Any = None,
) -> WorkerInput:
    """A worker's input from arrays it already holds (the pooled features of a cached
    stage, ``tljob.run.cached_stage``; a list: its views, one per epoch in turn), batched
    as ``worker_input_per_worker`` batches images held in memory: training per replica,
    endless, many steps a call; validation per replica (``in_memory_val_per_replica``)."""
    replicas_here = max(1, strategy.num_replicas_in_sync // world_size)
    first = train_arrays[0] if isinstance(train_arrays, list) else train_arrays
    steps = training_steps(len(first[1]), batch_size, replicas_here)
    # A step on features is a few matrix products: the call into the compiled step, the
    # per-step callbacks and their log reads cost more than it, so a call runs many steps
    # (the callbacks, the clock and the live display then see one "step" per call).
    per_call = max(1, min(steps, ARRAY_STEPS_PER_EXECUTION))
    clock = InputClock(batches_per_step=replicas_here, steps_per_call=per_call)
    per_epoch = steps * replicas_here
    train = in_memory_train(train_arrays, batch_size, shuffle > 0, seed, first_epoch, per_epoch)
    val, val_steps = in_memory_val_per_replica(val_arrays, batch_size, replicas_here)
    return WorkerInput(
        train=per_replica(strategy, stamped(class_weighted(train, class_weights), clock)),
        val=per_replica(strategy, val),
        steps_per_epoch=steps,
        clock=clock,
        train_in_memory=True,
        val_in_memory=True,
        steps_per_execution=per_call,
        validation_steps=val_steps,
    )

"""Where a job epoch goes beyond a plain fit: `job_overhead.py`'s plain fit with one part of
the job added at a time, in one process (or a Ray task), steady epochs compared.

    PYTHONPATH=. .venv/bin/python benchmarks/job_overhead_parts.py [--epochs 4]
        [--parts plain strategy feed stamps callback ray_task]

Each part adds to the one before it:

plain      the benchmark's plain tf_keras fit on in-memory arrays
strategy   ... under MultiWorkerMirroredStrategy (one worker, as a Ray Train worker builds it)
feed       ... fed as a worker's in-memory rows are (``feed.in_memory_train``, ``per_replica``)
stamps     ... with the batches' time stamps and the input-wait callback
callback   ... with a callback on every batch (as the job's progress and NaN guard are)
ray_task   ... all that inside a Ray task of 0.5 CPU (a private local Ray of 2 CPUs)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

PARTS = ("plain", "strategy", "feed", "stamps", "callback", "ray_task")


def epochs_with(part: str, epochs: int, workdir: str) -> list[float]:
    """Seconds per epoch of the fit with ``part`` and every part before it."""
    import tensorflow as tf

    from benchmarks import job_overhead as base
    from tljob.config import Trainable
    from tljob.nn import model as nn_model
    from tljob.nn.keras import tf_keras
    from tljob.run import feed
    from tljob.run.input_clock import InputWaitCallback
    from tljob.run.input_wait import InputClock

    level = PARTS.index(part)
    job = base.job_config(base.demo_tree(Path(workdir)), Path(workdir), "parts", 1, epochs)
    data = base.arrays(job)
    strategy = (
        tf.distribute.MultiWorkerMirroredStrategy() if level >= 1 else tf.distribute.get_strategy()
    )
    seconds: list[float] = []

    class Clock(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(round(time.monotonic() - self.start, 3))

    class EveryBatch(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # as the NaN guard reads it

    with strategy.scope():
        net = nn_model.build_model(job.model, 10, 32)
        nn_model.set_trainable(net, Trainable.parse("all"))
        nn_model.compile_for_stage(net, "adam", 1e-3)
    callbacks: list = [Clock()]
    if level < 2:
        net.fit(*data["train"], batch_size=base.BATCH, epochs=epochs, shuffle=True,
                validation_data=data["val"], callbacks=callbacks, verbose=0)  # fmt: skip
        return seconds
    train = feed.in_memory_train(data["train"], base.BATCH, True, 0, lambda: 0)
    if level >= 3:
        clock = InputClock()
        train = feed.stamped(train, clock)
        callbacks.append(InputWaitCallback(clock))
    if level >= 4:
        callbacks.append(EveryBatch())
    net.fit(
        feed.per_replica(strategy, train),
        steps_per_epoch=len(data["train"][1]) // base.BATCH,
        epochs=epochs,
        validation_data=feed.in_memory_val(data["val"], base.BATCH),
        callbacks=callbacks,
        verbose=0,
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--workdir", default="/tmp/tljob-overhead")
    parser.add_argument("--one", choices=PARTS, help=argparse.SUPPRESS)  # a child's part
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_run(args.one, args.epochs, args.workdir)))
        return
    rows = []
    for part in args.parts:
        # a fresh process per part: one strategy per process, nothing traced carried over
        child = subprocess.run(
            [sys.executable, __file__, "--one", part, "--epochs", str(args.epochs),
             "--workdir", args.workdir],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        seconds = json.loads(child.stdout.strip().splitlines()[-1])
        steady = statistics.mean(seconds[1:])
        rows.append((part, seconds, steady))
        print(f"{part}: {seconds}", flush=True)
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.1f}\n")
    print("| with | epochs, s | steady mean, s | vs plain |\n| --- | --- | --- | --- |")
    plain = rows[0][2]
    for part, seconds, steady in rows:
        print(f"| {part} | {', '.join(f'{s:.2f}' for s in seconds)} | {steady:.2f} | "
              f"{steady / plain:.2f}x |")  # fmt: skip


def _run(part: str, epochs: int, workdir: str) -> list[float]:
    if part != "ray_task":
        return epochs_with(part, epochs, workdir)
    import ray

    # the task's process imports this file's modules as the driver does
    os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=0.5)(epochs_with)
        return ray.get(task.remote("callback", epochs, workdir))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

"""How long the training steps waited for their input, and what would feed them. Pure (no
Ray, no TensorFlow): the worker's Keras callback (``tljob.run.input_clock``) and the
training pipeline's last stage (``tljob.run.feed.stamped``) drive an ``InputClock``; the
driver turns the epochs' figures into the summary's ``input`` section.

Where the wait is measured: a training step blocks on its input inside Keras' compiled
train function, at the distributed iterator's ``get_next``, behind prefetch buffers (the
pipeline's own and the distribution's) that hide a slow source until they run dry. So the
pipeline's last stage notes the time each batch leaves it (``delivered``), after every
buffer of the pipeline itself; the step's wait is how long after the step began its batch
was delivered: ``max(0, delivered - step begin)``, at most the step's own time. A batch
that was ready before its step began cost no wait. Batches are delivered in order and each
step takes one per replica of this worker, so the k-th step's batches are the k-th
deliveries (the latest of them decides).
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

# A run whose steps wait for input longer than this share of their time is told how many
# more Ray Data CPUs would feed it.
STARVED_FRACTION = 0.2


class EpochGate:
    """Lets an endless streamed training dataset start epoch ``n`` of its stream only once
    training has begun epoch ``n`` of the current ``fit``, and end when the ``fit`` ends
    (``open`` at its start, ``epoch_begun`` at every epoch, ``close`` at its end)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._begun = 0
        self._open = False

    def open(self) -> None:
        with self._cond:
            self._generation += 1
            self._begun, self._open = 0, True
            self._cond.notify_all()

    def epoch_begun(self) -> None:
        with self._cond:
            self._begun += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._generation += 1
            self._open = False
            self._cond.notify_all()

    @contextlib.contextmanager
    def fitting(self) -> Iterator[None]:
        """Around the ``fit`` calls: the stream ends when they end, by an exception too (an
        iterator goes only once its generator returns, and a waiting generator never would;
        a ``fit`` that returns ends it already, ``close`` at its end)."""
        try:
            yield
        finally:
            self.close()

    def generation(self) -> int:
        with self._cond:
            return self._generation

    def wait_for_epoch(self, generation: int, epoch: int) -> bool:
        """Block until epoch ``epoch`` (0-based) of the ``fit`` of ``generation`` has begun:
        True; False once that ``fit`` has ended (the stream must end)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._generation != generation or (self._open and self._begun > epoch)
            )
            return self._generation == generation


class InputClock:
    """One worker's training steps: when each began and ended, and when each batch left the
    pipeline. ``delivered`` runs on a tf.data thread, the rest on the training thread."""

    def __init__(self, batches_per_step: int = 1, steps_per_call: int = 1) -> None:
        # A call of the compiled step may run several steps (fit's steps_per_execution):
        # the hooks then bracket the call, and only its first step's wait is seen.
        self.batches_per_step, self.steps_per_call = batches_per_step, steps_per_call
        self.gate = EpochGate()
        self._lock = threading.Lock()
        self._deliveries: collections.deque[tuple[float, int]] = collections.deque()
        self._step_began = 0.0
        self.steps, self.images = 0, 0
        self.step_seconds = 0.0
        self.wait_seconds = 0.0

    def delivered(self, rows: int) -> None:
        """A batch of ``rows`` images left the pipeline now."""
        with self._lock:
            self._deliveries.append((time.monotonic(), int(rows)))

    def fit_begins(self) -> None:
        """A new ``fit``: a new iterator, so batches prefetched for the last one are void."""
        with self._lock:
            self._deliveries.clear()
        self.gate.open()

    def epoch_begins(self) -> None:
        self.steps, self.images, self.step_seconds, self.wait_seconds = 0, 0, 0.0, 0.0
        self.gate.epoch_begun()

    def step_begins(self) -> None:
        self._step_began = time.monotonic()

    def step_ends(self) -> None:
        now = time.monotonic()
        step = now - self._step_began
        with self._lock:
            taken = [
                self._deliveries.popleft()
                for _ in range(
                    min(self.batches_per_step * self.steps_per_call, len(self._deliveries))
                )
            ]
        first_step = taken[: self.batches_per_step]
        arrived = max((t for t, _ in first_step), default=self._step_began)
        self.steps += max(1, -(-len(taken) // self.batches_per_step))
        self.images += sum(rows for _, rows in taken)
        self.step_seconds += step
        self.wait_seconds += min(step, max(0.0, arrived - self._step_began))

    def epoch_figures(self) -> dict[str, Any]:
        """This epoch's figures so far (``epoch_figures``), and the images its steps took."""
        return {
            **epoch_figures(self.steps, self.wait_seconds, self.step_seconds),
            "images": self.images,
        }


def epoch_figures(steps: int, wait_seconds: float, step_seconds: float) -> dict[str, Any]:
    """One epoch's input figures: its training steps, the mean seconds per step spent in
    the step and waiting for input, and their ratio (0 to 1)."""
    per_step = step_seconds / steps if steps else 0.0
    wait = wait_seconds / steps if steps else 0.0
    return {
        "steps": steps,
        "step_seconds": round(per_step, 6),
        "input_wait_seconds": round(wait, 6),
        "input_wait_ratio": round(wait / per_step, 4) if per_step > 0 else 0.0,
    }


def more_data_cpus(
    images_per_step: int, step_seconds: float, wait_seconds: float, images_per_cpu_s: float
) -> int:
    """How many more Ray Data CPUs would deliver the images as fast as the steps take them.

    The stream now delivers ``images_per_step / step_seconds`` images/s; without the wait
    the steps would take ``images_per_step / (step_seconds - wait_seconds)``. Each Ray Data
    CPU delivers ``images_per_cpu_s`` (the stream's measured rate per CPU-second), so the
    difference over that rate, rounded up, is the CPUs missing (0 when nothing waits)."""
    compute = step_seconds - wait_seconds
    if wait_seconds <= 0 or compute <= 0 or images_per_cpu_s <= 0:
        return 0
    missing = images_per_step * (1 / compute - 1 / step_seconds) / images_per_cpu_s
    return max(0, math.ceil(missing - 1e-9))


def input_summary(epochs: list[dict[str, Any]], images_per_step: int) -> dict[str, Any] | None:
    """The summary's ``input`` section from ``timings.json``'s epochs (those with an
    ``input`` entry; ``images_per_step``: the global batch), or None when there are none:
    the mean step and wait over the epochs, their ratio, whether it passes
    ``STARVED_FRACTION``, and when it does and the training split is streamed, the Ray
    Data CPUs that would feed it (from the epochs' measured ``stream_images_per_cpu_s``)."""
    figures = [e["input"] for e in epochs if e.get("input", {}).get("steps")]
    if not figures:
        return None
    streamed = any(f.get("streamed") for f in figures)
    steps = sum(f["steps"] for f in figures)
    step = sum(f["step_seconds"] * f["steps"] for f in figures)
    wait = sum(f["input_wait_seconds"] * f["steps"] for f in figures)
    section: dict[str, Any] = {
        "streamed": streamed,
        "epochs": len(figures),
        **epoch_figures(steps, wait, step),
        "images_per_step": images_per_step,
    }
    section["starved"] = section["input_wait_ratio"] > STARVED_FRACTION
    rates = [f["stream_images_per_cpu_s"] for f in figures if f.get("stream_images_per_cpu_s")]
    section["stream_images_per_cpu_s"] = round(sum(rates) / len(rates), 1) if rates else None
    if section["starved"] and streamed and rates:
        section["more_data_cpus"] = more_data_cpus(
            images_per_step,
            section["step_seconds"],
            section["input_wait_seconds"],
            section["stream_images_per_cpu_s"],
        )
    return section


def starvation_line(section: dict[str, Any]) -> str | None:
    """The driver's line about a starved run, or None when it was not starved."""
    if not section.get("starved"):
        return None
    share = (
        f"input: the training steps waited for images {section['input_wait_ratio']:.0%} of "
        f"their time ({section['input_wait_seconds'] * 1000:.1f} of "
        f"{section['step_seconds'] * 1000:.1f} ms a step)"
    )
    if not section["streamed"]:
        return (
            share + ": the images are served from worker memory, so more Ray Data CPUs "
            "would not help"
        )
    if section.get("more_data_cpus") is None:
        return share + "; the stream's rate per CPU was not measured"
    return (
        f"{share}; the stream delivers {section['stream_images_per_cpu_s']:.0f} images/s per "
        f"CPU: about {section['more_data_cpus']} more CPU(s) for Ray Data "
        "(`scaling.data_cpus`, or a larger cluster) would feed it"
    )

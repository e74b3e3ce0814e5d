"""Keyed random draws: what image i sees in epoch e depends on (seed, e, i, stream) only.

Draws come from a counter-based hash (splitmix64's finaliser), not from a generator's
stream, so they are the same whichever task, worker, block or retry computes them, and a
batch of N images is drawn in a few vectorised numpy operations. ``stream`` separates the
uses (geometry, colour, erasing, mixing...), so turning one option on never changes the
draws of another.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_MASK = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _word(value: int) -> np.ndarray:
    return np.array([value & _MASK], dtype=np.uint64)


def image_keys(sha256_hex: Sequence[str]) -> np.ndarray:
    """One uint64 key per image: the first 16 hex digits of its content hash."""
    return np.array([int(str(h)[:16], 16) for h in sha256_hex], dtype=np.uint64)


def uniforms(
    seed: int, epoch: int, keys: np.ndarray, count: int, stream: int = 0, first: int = 0
) -> np.ndarray:
    """(len(keys), count) float64 draws in [0, 1) for ``keys`` in ``epoch``: columns
    ``first`` .. ``first + count - 1`` of ``stream``. A column's draws are the same whatever
    ``first`` and ``count`` a call asks for, so several ops can share a stream by columns."""
    keys = np.asarray(keys, dtype=np.uint64)
    with np.errstate(over="ignore"):
        salt = _mix(_mix(_mix(_word(seed) + _GOLDEN) ^ _word(epoch)) ^ _word(stream))
        base = _mix(keys ^ salt)
        columns = np.arange(first + 1, first + count + 1, dtype=np.uint64)
        counters = base[:, None] + _GOLDEN * columns
        bits = _mix(counters)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def generator(seed: int, epoch: int, key: int, stream: int = 0) -> np.random.Generator:
    """A numpy generator for one image's pixel-level noise (e.g. random erasing's fill)."""
    return np.random.default_rng([seed & _MASK, epoch & _MASK, int(key) & _MASK, stream])

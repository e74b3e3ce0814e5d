"""Which candidates ``tljob backbones rank`` scores, and on which rows. Pure (no Ray, no
TensorFlow).

Candidates: a comma-separated list of registered backbone names, or ``all`` (every
registered backbone), or ``small`` (those of at most ``SMALL_PARAMETERS`` parameters). A
name may carry its own weights, ``NAME:none`` or ``NAME:imagenet``, over the job's
``model.weights`` (e.g. to see what pretraining is worth: ``mobilenet_v2_tv,mobilenet_v2_tv:none``).

Rows: ``stratified_subsample`` keeps ``n`` rows with every class represented in
proportion to its share (largest remainders; at least one row of every class when ``n``
allows), chosen by a generator seeded with the seed given (``data.seed``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tljob.errors import UserError
from tljob.zoo import BACKBONES

SMALL_PARAMETERS = 8_000_000
GROUPS = ("all", "small")
WEIGHT_CHOICES = ("imagenet", "none")


class RankArgumentError(UserError):
    """A ``tljob backbones rank`` argument that cannot be used (exit 2)."""


@dataclass(frozen=True)
class Candidate:
    """One backbone to score, and its weights when not the job's (``""``: the job's)."""

    backbone: str
    weights: str = ""

    @property
    def label(self) -> str:
        return f"{self.backbone}:{self.weights}" if self.weights else self.backbone


def parse_candidates(text: str) -> list[Candidate]:
    """``--candidates``: the candidates in order, each once; ``RankArgumentError`` naming
    the unknown names (and listing the valid ones) or a weights choice other than
    ``WEIGHT_CHOICES``."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words:
        raise RankArgumentError("--candidates is empty: give backbone names, 'all' or 'small'")
    if words == ["all"]:
        return [Candidate(name) for name in BACKBONES]
    if words == ["small"]:
        return [
            Candidate(spec.name)
            for spec in sorted(BACKBONES.values(), key=lambda s: (s.parameters, s.name))
            if spec.parameters <= SMALL_PARAMETERS
        ]
    chosen: list[Candidate] = []
    unknown, bad_weights = [], []
    for word in words:
        name, _, weights = word.partition(":")
        if name not in BACKBONES:
            unknown.append(name)
        elif weights and weights not in WEIGHT_CHOICES:
            bad_weights.append(word)
        elif Candidate(name, weights) not in chosen:
            chosen.append(Candidate(name, weights))
    if unknown:
        raise RankArgumentError(
            f"--candidates: unknown backbone(s) {', '.join(map(repr, unknown))}; the valid "
            f"names are 'all', 'small' or registered backbones: {', '.join(sorted(BACKBONES))}"
        )
    if bad_weights:
        raise RankArgumentError(
            f"--candidates: {', '.join(map(repr, bad_weights))}: the weights after ':' must "
            f"be one of {', '.join(WEIGHT_CHOICES)} (or nothing: the job's `model.weights`)"
        )
    return chosen


def class_quota(counts: np.ndarray, n: int) -> np.ndarray:
    """Rows to keep per class for ``n`` of ``counts.sum()`` rows: proportional, by largest
    remainders (ties to the lower class index), at least one per present class while ``n``
    allows, never more than a class has."""
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    if n >= total:
        return counts.copy()
    exact = counts * n / total
    quota = np.floor(exact).astype(np.int64)
    present = counts > 0
    floor_one = present & (quota == 0)
    if n >= int(present.sum()):
        quota[floor_one] = 1
    left = n - int(quota.sum())
    order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - np.floor(exact[c])), c))
    while left > 0:  # add to the largest remainders first, then round again
        for c in order:
            if left and quota[c] < counts[c]:
                quota[c] += 1
                left -= 1
    while left < 0:  # the floor of one overshot: take from the largest classes
        c = int(np.argmax(quota - floor_one))
        quota[c] -= 1
        left += 1
    return quota


def stratified_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` rows of ``labels`` (all of them when ``n`` is not smaller),
    ``class_quota`` per class, drawn without replacement by ``numpy``'s generator seeded
    with ``[seed, 22]``."""
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        return np.zeros(0, np.int64)
    counts = np.bincount(labels)
    quota = class_quota(counts, n)
    rng = np.random.default_rng([seed, 22])
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False)
        for c, q in enumerate(quota)
        if q
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def validation_rows(train_subsample: int) -> int:
    """Validation rows scored per candidate for a training subsample of that many: half as
    many (the probe's figures are means over them)."""
    return max(1, train_subsample // 2)

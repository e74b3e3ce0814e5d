"""Scores on the driver, as numpy: top-k, the accuracy, the per-image results. Pure.

``Scored`` is what ``pipeline.collect`` brings back: per input its uri, its true class
index (-1 when unknown), the probability vector (NaN for an input that could not be read)
and the reason it could not ("" when it could). ``Scored.summary()`` is the exported
model's entry of ``summary.json`` (``images``, ``correct``, ``accuracy``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest probabilities of each row, largest first (ties: the lower class
    index first), as (class indices int64 (N, k), probabilities float32 (N, k))."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(probs, order, axis=1).astype(np.float32)


def class_indices(labels: np.ndarray) -> np.ndarray:
    """A batch of labels as class indices: indices as they are, probability rows (one-hot
    or MixUp / CutMix mixtures) as their largest entry."""
    labels = np.asarray(labels)
    return labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(np.int64)


@dataclass
class Scored:
    """Per-input results, in the order they were collected."""

    uris: np.ndarray  # object (N,)
    truth: np.ndarray  # int64 (N,), -1 unknown
    probs: np.ndarray  # float32 (N, C); NaN rows where ``errors`` is not ""
    errors: np.ndarray  # object (N,), "" when the input was scored

    def __len__(self) -> int:
        return len(self.uris)

    @property
    def scored(self) -> np.ndarray:
        """Mask of the inputs the model scored."""
        return self.errors == ""

    @property
    def predicted(self) -> np.ndarray:
        """Each input's top-1 class index (-1 where it was not scored)."""
        out = np.full(len(self), -1, np.int64)
        ok = self.scored
        if ok.any():
            out[ok] = self.probs[ok].argmax(axis=1)
        return out

    def summary(self) -> dict[str, Any]:
        """Top-1 accuracy over the scored inputs whose truth is known."""
        known = self.scored & (self.truth >= 0)
        correct = int((self.predicted[known] == self.truth[known]).sum())
        images = int(known.sum())
        return {
            "images": images,
            "correct": correct,
            "accuracy": correct / images if images else 0.0,
        }

    def unreadable_reasons(self) -> dict[str, int]:
        """How many inputs were not scored, by kind of reason."""
        kinds = Counter(str(e).split(":", 1)[0] for e in self.errors if e)
        return dict(sorted(kinds.items()))

    def sorted_by_uri(self) -> Scored:
        order = np.argsort(self.uris.astype(str), kind="stable")
        return Scored(self.uris[order], self.truth[order], self.probs[order], self.errors[order])

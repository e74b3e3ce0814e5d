"""The figures of an evaluation, from true labels and predicted probabilities (pure).

``score(truth, probs, classes)`` returns the dict written as ``metrics.json``;
``per_class_csv`` and ``mistakes_csv`` the text of ``per_class.csv`` and ``mistakes.csv``.
``Tally`` holds the sums the figures are made of: tallies of batches add up, so batches can
be scored where they were predicted and only the tallies (and the mistakes) collected.
The rules (also in docs/pages/evaluation.md):

- the predicted class of an image is the argmax of its probabilities (on a tie, the lowest
  class index); its confidence is that probability;
- top-5: the true class is among the 5 most probable (ties ranked by lower index); only
  when there are at least 5 classes;
- per class: precision = TP / predicted (0 when the class was never predicted), recall =
  TP / support (0 when the class has no image), F1 = 2PR / (P + R) (0 when P + R = 0), as
  scikit-learn with ``zero_division=0``;
- macro-F1: the mean F1 over the classes that have an image or were predicted (a class
  with neither has no F1 to speak of; scikit-learn's default ``labels``);
- NLL: the mean of -ln p(true class), p clipped to [1e-7, 1 - 1e-7] as Keras' cross-entropy
  clips (``NLL_EPSILON``), so it compares with ``val_loss`` of a run without label smoothing;
- Brier: the mean over images of the sum over classes of (p_c - onehot_c)^2 (0 to 2);
- ECE: 15 equal-width confidence bins, bin i holding confidences in (i/15, (i+1)/15];
  the sum over bins of (images in bin / N) * |accuracy in bin - mean confidence in bin|.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ECE_BINS = 15
NLL_EPSILON = 1e-7  # tf_keras' backend epsilon, which its cross-entropy clips with
TOP_K = 5
# Rows of ``probs`` must sum to 1 within this (a softmax in float16 is a few 1e-3 off).
SUM_TOLERANCE = 1e-2
PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1", "support")
MISTAKE_COLUMNS = ("uri", "true", "predicted", "confidence")


def score(truth: Any, probs: Any, classes: Sequence[str]) -> dict[str, Any]:
    """The evaluation of N images over C classes, as the plain dict of ``metrics.json``:
    ``Tally.of(truth, probs, classes).metrics(classes)``.

    ``truth``: N class indices in [0, C); ``probs``: (N, C) probabilities (finite, >= 0,
    rows summing to 1 within ``SUM_TOLERANCE``); ``classes``: the C distinct class names,
    by index. Raises ValueError naming what is wrong with them (N = 0 included).

    Keys, in this order (every float a finite Python float, every count an int):
    ``images`` N; ``classes`` the names; ``accuracy``; ``top5_accuracy`` (only when
    C >= 5); ``macro_f1``; ``macro_f1_classes`` (how many classes it averages); ``nll``;
    ``nll_epsilon``; ``brier``; ``ece``; ``ece_bins`` 15; ``per_class`` {name: {precision,
    recall, f1, support}} in class order; ``confusion_matrix`` C lists of C counts (row:
    true class, column: predicted); ``calibration`` 15 dicts {low, high, images,
    confidence, accuracy} (confidence and accuracy None for an empty bin), the reliability
    diagram's data. The rules are the module's."""
    return Tally.of(truth, probs, classes).metrics(classes)


@dataclass(frozen=True)
class Tally:
    """Every sum the metrics are made of, so batches can be scored where they are (a Ray
    Data task, a worker) and only these few numbers travel: ``Tally.of(batch) + ...``
    equals ``Tally.of`` of all the rows (counts exactly, float sums up to rounding).

    ``confusion`` (C, C) int64 counts, row the true class; ``top5`` images whose true class
    is in the top 5 (0 below 5 classes); ``nll`` and ``brier`` the per-image sums; per
    confidence bin (``ECE_BINS``): ``bin_images``, ``bin_confidence`` (sum of confidences),
    ``bin_correct`` (right predictions)."""

    confusion: np.ndarray
    top5: int
    nll: float
    brier: float
    bin_images: np.ndarray
    bin_confidence: np.ndarray
    bin_correct: np.ndarray

    @classmethod
    def of(cls, truth: Any, probs: Any, classes: Sequence[str]) -> Tally:
        """The tally of a batch (inputs as ``score``; ValueError likewise)."""
        truth, probs = _checked(truth, probs, classes)
        n, c = probs.shape
        rows = np.arange(n)
        predicted = probs.argmax(axis=1)
        confidence = probs[rows, predicted]
        correct = predicted == truth
        confusion = np.zeros((c, c), dtype=np.int64)
        np.add.at(confusion, (truth, predicted), 1)
        p_true = probs[rows, truth]
        top5 = 0
        if c >= TOP_K:
            # classes ranked above the true one: more probable, or as probable and a lower index
            above = (probs > p_true[:, None]).sum(axis=1) + (
                (probs == p_true[:, None]) & (np.arange(c) < truth[:, None])
            ).sum(axis=1)
            top5 = int((above < TOP_K).sum())
        # sum_c (p_c - onehot_c)^2 = sum_c p_c^2 - 2 p_true + 1, without an (N, C) one-hot
        brier = np.maximum((probs * probs).sum(axis=1) - 2.0 * p_true + 1.0, 0.0)
        index = bin_index(confidence)
        return cls(
            confusion=confusion,
            top5=top5,
            nll=float(-np.log(np.clip(p_true, NLL_EPSILON, 1.0 - NLL_EPSILON)).sum()),
            brier=float(brier.sum()),
            bin_images=np.bincount(index, minlength=ECE_BINS).astype(np.int64),
            bin_confidence=np.bincount(index, weights=confidence, minlength=ECE_BINS),
            bin_correct=np.bincount(index, weights=correct, minlength=ECE_BINS).astype(np.int64),
        )

    def __add__(self, other: Tally) -> Tally:
        if self.confusion.shape != other.confusion.shape:
            raise ValueError(f"tallies of {len(self.confusion)} and {len(other.confusion)} classes")
        return Tally(
            self.confusion + other.confusion,
            self.top5 + other.top5,
            self.nll + other.nll,
            self.brier + other.brier,
            self.bin_images + other.bin_images,
            self.bin_confidence + other.bin_confidence,
            self.bin_correct + other.bin_correct,
        )

    def metrics(self, classes: Sequence[str]) -> dict[str, Any]:
        """``metrics.json``'s dict (see ``score``) for the C ``classes`` of this tally."""
        confusion = self.confusion
        c = len(confusion)
        if len(classes) != c:
            raise ValueError(f"{len(classes)} class names for a tally of {c} classes")
        n = int(confusion.sum())
        tp = np.diag(confusion).astype(np.float64)
        support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
        precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
        recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
        both = precision + recall
        f1 = np.divide(2 * precision * recall, both, out=np.zeros(c), where=both > 0)
        seen = (support > 0) | (predicted > 0)
        bins = self.calibration()
        result: dict[str, Any] = {
            "images": n,
            "classes": [str(name) for name in classes],
            "accuracy": float(tp.sum() / n),
        }
        if c >= TOP_K:
            result["top5_accuracy"] = self.top5 / n
        result.update(
            macro_f1=float(f1[seen].mean()),
            macro_f1_classes=int(seen.sum()),
            nll=self.nll / n,
            nll_epsilon=NLL_EPSILON,
            brier=self.brier / n,
            # sum_b (n_b / N) |acc_b - conf_b| = sum_b |correct_b - confidence sum_b| / N
            ece=float(np.abs(self.bin_correct - self.bin_confidence).sum() / n),
            ece_bins=ECE_BINS,
            per_class={
                str(name): {
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
                for i, name in enumerate(classes)
            },
            confusion_matrix=confusion.tolist(),
            calibration=[b.to_dict() for b in bins],
        )
        return result

    def calibration(self) -> list[CalibrationBin]:
        """The ``ECE_BINS`` bins: (low, high], images, mean confidence, accuracy."""
        edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
        out = []
        for i in range(ECE_BINS):
            count = int(self.bin_images[i])
            out.append(
                CalibrationBin(
                    low=float(edges[i]),
                    high=float(edges[i + 1]),
                    images=count,
                    confidence=float(self.bin_confidence[i] / count) if count else math.nan,
                    accuracy=float(self.bin_correct[i] / count) if count else math.nan,
                )
            )
        return out


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin: (low, high], its image count, mean confidence and accuracy (nan
    when empty)."""

    low: float
    high: float
    images: int
    confidence: float
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        empty = self.images == 0
        return {
            "low": self.low,
            "high": self.high,
            "images": self.images,
            "confidence": None if empty else self.confidence,
            "accuracy": None if empty else self.accuracy,
        }


def bin_index(confidence: Any) -> np.ndarray:
    """The bin of each confidence among ``ECE_BINS`` equal-width bins over (0, 1], edges
    ``np.linspace(0, 1, ECE_BINS + 1)``: a confidence equal to an edge belongs to the bin
    below it (the first bin also takes 0)."""
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    index = np.searchsorted(edges, np.asarray(confidence, dtype=np.float64), side="left") - 1
    return np.clip(index, 0, ECE_BINS - 1)


def metrics_json(metrics: Mapping[str, Any]) -> str:
    """``metrics.json``'s text (indent 1, a final newline); ValueError on a non-finite
    float, which JSON cannot hold."""
    return json.dumps(metrics, indent=1, allow_nan=False) + "\n"


def per_class_csv(metrics: Mapping[str, Any]) -> str:
    """``per_class.csv`` from ``score``'s result: a header ``class,precision,recall,f1,
    support``, then one row per class in class order; figures with 6 decimals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PER_CLASS_COLUMNS)
    for name, row in metrics["per_class"].items():
        writer.writerow(
            [name, *(f"{row[k]:.6f}" for k in ("precision", "recall", "f1")), row["support"]]
        )
    return out.getvalue()


@dataclass(frozen=True)
class Mistake:
    uri: str
    true: str
    predicted: str
    confidence: float  # the predicted class's probability


def mistakes(uris: Sequence[str], truth: Any, probs: Any, classes: Sequence[str]) -> list[Mistake]:
    """Every image whose predicted class (argmax, as ``score``) is not its true class, the
    most confident first; equal confidences in ascending uri order. Inputs as ``score``,
    plus the N ``uris``."""
    truth, probs = _checked(truth, probs, classes)
    if len(uris) != len(truth):
        raise ValueError(f"{len(uris)} uris for {len(truth)} images: one uri per image")
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(truth)), predicted]
    wrong = np.flatnonzero(predicted != truth)
    rows = [
        Mistake(str(uris[i]), classes[truth[i]], classes[predicted[i]], float(confidence[i]))
        for i in wrong
    ]
    return sorted(rows, key=lambda m: (-m.confidence, m.uri))


def mistakes_csv(rows: Sequence[Mistake]) -> str:
    """``mistakes.csv``: header ``uri,true,predicted,confidence``, then ``rows`` in the
    order given (``mistakes`` orders them); confidence with 6 decimals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MISTAKE_COLUMNS)
    for m in rows:
        writer.writerow([m.uri, m.true, m.predicted, f"{m.confidence:.6f}"])
    return out.getvalue()


def _checked(truth: Any, probs: Any, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(truth int64 (N,), probs float64 (N, C)), or ValueError naming the broken rule."""
    probs = np.asarray(probs, dtype=np.float64)
    truth_in = np.asarray(truth)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be (N, C) with N >= 1 images, got shape {probs.shape}")
    n, c = probs.shape
    if len(classes) != c or len(set(classes)) != c:
        raise ValueError(f"classes must be {c} distinct names (one per column of probs)")
    if truth_in.shape != (n,) or not np.issubdtype(truth_in.dtype, np.integer):
        raise ValueError(
            f"truth must hold {n} integer class indices (one per row of probs), "
            f"got shape {truth_in.shape} of {truth_in.dtype}"
        )
    outside = sorted(set(truth_in[(truth_in < 0) | (truth_in >= c)].tolist()))
    if outside:
        raise ValueError(f"truth has class indices outside [0, {c}): {outside[:5]}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probs must be finite and non-negative")
    sums = probs.sum(axis=1)
    if (np.abs(sums - 1.0) > SUM_TOLERANCE).any():
        worst = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(f"probs rows must sum to 1: row {worst} sums to {sums[worst]:.4f}")
    return truth_in.astype(np.int64), probs

"""A linear probe: multinomial logistic regression on standardised features. Pure numpy,
deterministic (full-batch gradient descent from zero weights: no randomness at all).

The features are standardised with the training rows' mean and standard deviation (a
constant feature becomes 0); the loss is the mean cross-entropy plus ``l2`` / 2 times the
squared weights (not the biases). The step is 1 / L, L the gradient's Lipschitz bound
(the largest eigenvalue of XᵀX / n, halved, plus ``l2``), so it converges without a tuned
learning rate; ``steps`` full-batch steps are taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

L2 = 1e-3
STEPS = 300


@dataclass(frozen=True)
class ProbeScore:
    """The probe's figures on the validation rows."""

    val_accuracy: float
    val_macro_f1: float
    train_accuracy: float


def standardise(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``train`` and ``other`` (float rows) scaled by ``train``'s mean and standard
    deviation per column; a constant column is 0 in both."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    return (train - mean) * scale, (other - mean) * scale


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def fit(
    x: np.ndarray, y: np.ndarray, classes: int, l2: float = L2, steps: int = STEPS
) -> tuple[np.ndarray, np.ndarray]:
    """Weights (dim, classes) and biases (classes,) of the regularised multinomial logistic
    regression of labels ``y`` (0 .. classes-1) on the rows ``x`` (already standardised)."""
    x = np.asarray(x, np.float64)
    n, dim = x.shape
    onehot = np.zeros((n, classes))
    onehot[np.arange(n), y] = 1.0
    # ||x||₂² / n bounds XᵀX / n's top eigenvalue; the softmax Hessian is at most 1/2 of it
    top = np.linalg.norm(x, ord=2) ** 2 / n if n and dim else 0.0
    step = 1.0 / (0.5 * top + l2 + 1e-12)
    w, b = np.zeros((dim, classes)), np.zeros(classes)
    for _ in range(steps):
        err = (_softmax(x @ w + b) - onehot) / n
        w -= step * (x.T @ err + l2 * w)
        b -= step * err.sum(axis=0)
    return w, b


def macro_f1(truth: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """The mean F1 over the classes that are true or predicted at least once (as
    ``tljob.evaluate.metrics`` averages it); NaN without rows."""
    scores = []
    for c in range(classes):
        tp = np.sum((predicted == c) & (truth == c))
        fp = np.sum((predicted == c) & (truth != c))
        fn = np.sum((predicted != c) & (truth == c))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    classes: int,
) -> ProbeScore:
    """Fit the probe on the training rows, score it on the validation rows."""
    train_s, val_s = standardise(np.asarray(train_x, np.float64), np.asarray(val_x, np.float64))
    w, b = fit(train_s, train_y, classes)
    predicted = np.argmax(val_s @ w + b, axis=1)
    fitted = np.argmax(train_s @ w + b, axis=1)
    return ProbeScore(
        val_accuracy=float(np.mean(predicted == val_y)) if len(val_y) else float("nan"),
        val_macro_f1=macro_f1(val_y, predicted, classes),
        train_accuracy=float(np.mean(fitted == train_y)) if len(train_y) else float("nan"),
    )

"""tljob.evaluate.metrics: exact figures on hand-computed examples, the files' exact text."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from tljob.evaluate.metrics import (
    NLL_EPSILON,
    Tally,
    metrics_json,
    mistakes,
    mistakes_csv,
    per_class_csv,
    score,
)

CLASSES = ["cat", "dog", "fox"]


def forced_dog() -> tuple[list[int], np.ndarray]:
    """A model that answers 'dog' (0.7) whatever it sees: 2 cats, 3 dogs, 1 fox."""
    truth = [0, 0, 1, 1, 1, 2]
    return truth, np.tile([0.2, 0.7, 0.1], (6, 1))


def test_a_model_forced_to_one_class_gives_the_exact_matrix_and_figures():
    truth, probs = forced_dog()
    m = score(truth, probs, CLASSES)
    assert m["confusion_matrix"] == [[0, 2, 0], [0, 3, 0], [0, 1, 0]]
    assert m["images"] == 6 and m["classes"] == CLASSES
    assert m["accuracy"] == 0.5  # the 3 dogs
    assert "top5_accuracy" not in m  # 3 classes
    # cat and fox are never predicted: precision 0 by the rule (not nan), recall 0/2, 0/1;
    # dog: precision 3/6, recall 3/3, F1 = 2 * 0.5 * 1 / 1.5 = 2/3.
    assert m["per_class"] == {
        "cat": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2},
        "dog": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 3},
        "fox": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
    }
    assert m["macro_f1"] == pytest.approx(2 / 9) and m["macro_f1_classes"] == 3
    # NLL: p(true) is 0.2 for the 2 cats, 0.7 for the 3 dogs, 0.1 for the fox.
    assert m["nll"] == pytest.approx((-2 * math.log(0.2) - 3 * math.log(0.7) - math.log(0.1)) / 6)
    # Brier per image: cat (0.2-1)^2 + 0.7^2 + 0.1^2 = 0.64 + 0.49 + 0.01 = 1.14;
    # dog 0.04 + 0.09 + 0.01 = 0.14; fox 0.04 + 0.49 + 0.81 = 1.34.
    assert m["brier"] == pytest.approx((2 * 1.14 + 3 * 0.14 + 1.34) / 6)
    # Every confidence is 0.7, in bin 10 = (10/15, 11/15]: accuracy 0.5, so ECE = 0.2.
    assert m["ece"] == pytest.approx(0.2) and m["ece_bins"] == 15
    counts = [b["images"] for b in m["calibration"]]
    assert counts == [0] * 10 + [6] + [0] * 4
    assert m["calibration"][10] == {
        "low": pytest.approx(10 / 15), "high": pytest.approx(11 / 15), "images": 6,
        "confidence": pytest.approx(0.7), "accuracy": 0.5,
    }  # fmt: skip
    assert m["calibration"][0]["confidence"] is None and m["calibration"][0]["accuracy"] is None


def test_per_class_csv_exact_text():
    truth, probs = forced_dog()
    assert per_class_csv(score(truth, probs, CLASSES)) == (
        "class,precision,recall,f1,support\n"
        "cat,0.000000,0.000000,0.000000,2\n"
        "dog,0.500000,1.000000,0.666667,3\n"
        "fox,0.000000,0.000000,0.000000,1\n"
    )


# (probabilities, true class): confidence, correct?, ECE bin (i/15, (i+1)/15]
SIX = [
    ([0.90, 0.05, 0.05], 0),  # 0.90 right, bin 13
    ([0.95, 0.03, 0.02], 1),  # 0.95 wrong, bin 14
    ([0.10, 0.60, 0.30], 1),  # 0.60 right, on the edge 9/15: bin 8 (edges go to the bin below)
    ([0.20, 0.40, 0.40], 2),  # a tie: predicted 1, the lower index; 0.40 wrong, edge: bin 5
    ([0.50, 0.30, 0.20], 0),  # 0.50 right, bin 7
    ([0.88, 0.10, 0.02], 2),  # 0.88 wrong, bin 13
]


def test_ece_nll_and_brier_against_hand_computed_values():
    probs = np.array([p for p, _ in SIX])
    truth = [t for _, t in SIX]
    m = score(truth, probs, CLASSES)
    bins = {i: b["images"] for i, b in enumerate(m["calibration"]) if b["images"]}
    assert bins == {5: 1, 7: 1, 8: 1, 13: 2, 14: 1}
    # bin 13: accuracy 1/2, confidence (0.90 + 0.88) / 2 = 0.89 -> weight 2/6, gap 0.39;
    # bins 14, 8, 5, 7 hold one image each: gaps |0 - 0.95|, |1 - 0.6|, |0 - 0.4|, |1 - 0.5|.
    assert m["ece"] == pytest.approx((2 * 0.39 + 0.95 + 0.4 + 0.4 + 0.5) / 6)  # 0.505
    p_true = [0.90, 0.03, 0.60, 0.40, 0.50, 0.02]
    assert m["nll"] == pytest.approx(-sum(math.log(p) for p in p_true) / 6)
    # Brier per image: 0.01+0.0025+0.0025; 0.9025+0.9409+0.0004; 0.01+0.16+0.09;
    # 0.04+0.16+0.36; 0.25+0.09+0.04; 0.7744+0.01+0.9604.
    per_image = [0.015, 1.8438, 0.26, 0.56, 0.38, 1.7448]
    assert m["brier"] == pytest.approx(sum(per_image) / 6)  # 0.8006
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["confusion_matrix"] == [[2, 0, 0], [1, 1, 0], [1, 1, 0]]


def test_nll_clips_probabilities_at_the_documented_epsilon():
    m = score([1, 0], [[1.0, 0.0], [1.0, 0.0]], ["a", "b"])
    # image 1: p(true) = 0 -> 1e-7; image 2: p(true) = 1 -> 1 - 1e-7
    expected = (-math.log(NLL_EPSILON) - math.log(1 - NLL_EPSILON)) / 2
    assert m["nll"] == pytest.approx(expected) and m["nll"] == pytest.approx(8.059, abs=1e-3)
    assert m["brier"] == pytest.approx(1.0)  # (1 - 0)^2 + (0 - 1)^2 = 2, and 0: mean 1


def test_top5_only_from_five_classes_with_ties_ranked_by_index():
    four = score([0, 1], np.full((2, 4), 0.25), list("abcd"))
    assert "top5_accuracy" not in four
    # Six equally likely classes: ranked by index, so classes 0-4 are the top 5 and 5 is not.
    uniform = np.full((3, 6), 1 / 6)
    m = score([4, 5, 0], uniform, list("abcdef"))
    assert m["top5_accuracy"] == pytest.approx(2 / 3)
    assert list(m)[:4] == ["images", "classes", "accuracy", "top5_accuracy"]
    # The true class 6th most probable, then 5th.
    probs = np.array([[0.3, 0.25, 0.2, 0.15, 0.06, 0.04], [0.3, 0.25, 0.2, 0.15, 0.06, 0.04]])
    assert score([5, 4], probs, list("abcdef"))["top5_accuracy"] == 0.5


def test_macro_f1_leaves_out_classes_without_images_or_predictions():
    # 'c' has no image and is never predicted: macro-F1 averages a and b only.
    m = score([0, 1, 1], [[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0]], list("abc"))
    # a: P 1/2, R 1 -> F1 2/3; b: P 1, R 1/2 -> F1 2/3.
    assert m["macro_f1"] == pytest.approx(2 / 3) and m["macro_f1_classes"] == 2
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_agrees_with_scikit_learn_on_a_random_case():
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 8, 400)
    probs = rng.dirichlet(np.full(8, 0.5), size=400)
    m = score(truth, probs, [f"c{i}" for i in range(8)])
    predicted = probs.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert m["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    p, r, f, s = precision_recall_fscore_support(truth, predicted, labels=range(8), zero_division=0)
    assert [row["precision"] for row in m["per_class"].values()] == pytest.approx(p)
    assert [row["recall"] for row in m["per_class"].values()] == pytest.approx(r)
    assert [row["f1"] for row in m["per_class"].values()] == pytest.approx(f)
    assert [row["support"] for row in m["per_class"].values()] == list(s)


def test_tallies_of_batches_add_up_to_the_whole():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 6, 300)
    probs = rng.dirichlet(np.full(6, 0.4), size=300)
    names = list("abcdef")
    parts = [Tally.of(truth[i : i + 70], probs[i : i + 70], names) for i in range(0, 300, 70)]
    merged = sum(parts[1:], parts[0]).metrics(names)
    whole = score(truth, probs, names)
    assert list(merged) == list(whole)
    # counts, and everything made of counts only, exactly
    for key in ("images", "accuracy", "top5_accuracy", "macro_f1", "per_class", "confusion_matrix"):
        assert merged[key] == whole[key], key
    # float sums in another order: equal up to rounding
    for key in ("nll", "brier", "ece"):
        assert merged[key] == pytest.approx(whole[key], rel=1e-12), key
    for mine, theirs in zip(merged["calibration"], whole["calibration"], strict=True):
        assert mine["images"] == theirs["images"] and mine["accuracy"] == theirs["accuracy"]
        if theirs["images"]:
            assert mine["confidence"] == pytest.approx(theirs["confidence"], rel=1e-12)
        else:
            assert mine["confidence"] is None
    with pytest.raises(ValueError, match="tallies of 6 and 3 classes"):
        parts[0] + Tally.of([0], [[1.0, 0.0, 0.0]], CLASSES)


def test_the_dict_is_json_ready():
    truth, probs = forced_dog()
    m = score(np.array(truth, dtype=np.int32), probs.astype(np.float32), CLASSES)
    assert json.loads(metrics_json(m)) == m
    assert type(m["accuracy"]) is float and type(m["images"]) is int
    assert all(type(v) is int for row in m["confusion_matrix"] for v in row)
    with pytest.raises(ValueError):
        metrics_json({**m, "ece": math.nan})


@pytest.mark.parametrize(
    ("truth", "probs", "message"),
    [
        ([0, 3], [[0.5, 0.5, 0], [1, 0, 0]], r"outside \[0, 3\): \[3\]"),
        ([0], [[0.5, 0.6, 0]], "row 0 sums to 1.1000"),
        ([0, 1], [[1, 0, 0]], r"1 integer class indices .*got shape \(2,\) of int64"),
        ([0.0], [[1, 0, 0]], "of float64"),
        ([], np.zeros((0, 3)), "N >= 1"),
        ([0], [[np.nan, 1, 0]], "finite"),
    ],
)
def test_bad_inputs_are_refused_by_name(truth, probs, message):
    with pytest.raises(ValueError, match=message):
        score(truth, probs, CLASSES)


def test_mistakes_most_confident_first_ties_by_uri():
    probs = np.array(
        [
            [0.6, 0.3, 0.1],  # z.jpg: true fox, said cat 0.6
            [0.1, 0.9, 0.0],  # right
            [0.0, 0.2, 0.8],  # b.jpg: true dog, said fox 0.8
            [0.3, 0.6, 0.1],  # a.jpg: true cat, said dog 0.6 (tie with z.jpg: uri order)
            [0.9, 0.05, 0.05],  # right
            [0.4, 0.3, 0.3],  # m.jpg: true fox, said cat 0.4
        ]
    )
    uris = ["z.jpg", "ok1.jpg", "b.jpg", "a.jpg", "ok2.jpg", "m.jpg"]
    rows = mistakes(uris, [2, 1, 1, 0, 0, 2], probs, CLASSES)
    assert [(r.uri, r.true, r.predicted) for r in rows] == [
        ("b.jpg", "dog", "fox"),
        ("a.jpg", "cat", "dog"),
        ("z.jpg", "fox", "cat"),
        ("m.jpg", "fox", "cat"),
    ]
    assert mistakes_csv(rows) == (
        "uri,true,predicted,confidence\n"
        "b.jpg,dog,fox,0.800000\n"
        "a.jpg,cat,dog,0.600000\n"
        "z.jpg,fox,cat,0.600000\n"
        "m.jpg,fox,cat,0.400000\n"
    )
    with pytest.raises(ValueError, match="5 uris for 6 images"):
        mistakes(uris[:5], [2, 1, 1, 0, 0, 2], probs, CLASSES)

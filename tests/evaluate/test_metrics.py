"""Metrics against hand-computable cases and scikit-learn; the vectorised bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from lymphosort.evaluate.metrics import (
    _from_confusion,
    _weighted_auc,
    classification_metrics,
    expected_calibration_error,
    paired_accuracy_difference,
)


def _binary(p1: list[float]) -> np.ndarray:
    p = np.asarray(p1, dtype=float)
    return np.stack([1 - p, p], 1)


def test_perfect() -> None:
    y = np.array([0, 0, 1, 1])
    m = classification_metrics(y, _binary([0.0, 0.0, 1.0, 1.0]), n_boot=50)
    assert m["n"] == 4
    assert m["accuracy"] == m["balanced_accuracy"] == m["f1"] == m["roc_auc"] == 1.0
    assert m["ece"] == 0.0
    assert m["confusion"] == [[2, 0], [0, 2]]
    assert m["intervals"]["accuracy"] == [1.0, 1.0]


def test_inverted() -> None:
    y = np.array([0, 0, 1, 1])
    m = classification_metrics(y, _binary([0.9, 0.8, 0.2, 0.1]), n_boot=0)
    assert m["accuracy"] == 0.0 and m["f1"] == 0.0 and m["roc_auc"] == 0.0
    assert m["confusion"] == [[0, 2], [2, 0]]
    assert "intervals" not in m
    # ECE: every prediction wrong with confidence 0.9/0.8 -> mean confidence 0.85.
    assert m["ece"] == pytest.approx(0.85)


def test_known_confusion() -> None:
    # 6 B (4 right), 4 T (3 right): TP=3, FP=2, FN=1.
    y = np.array([0] * 6 + [1] * 4)
    p1 = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.45]
    m = classification_metrics(y, _binary(p1), n_boot=0, class_names=["B", "T"])
    assert m["confusion"] == [[4, 2], [1, 3]]
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    # Pairs (pos, neg) ranked right: 0.8, 0.9, 0.95 beat all 6; 0.45 beats 0.1..0.4 (4).
    assert m["roc_auc"] == pytest.approx((3 * 6 + 4) / 24)
    assert m["class_names"] == ["B", "T"] and m["support"] == [6, 4]


def test_probability_auc_differs_from_hard_auc() -> None:
    # Both positives are ranked above both negatives, but one positive falls below the 0.5
    # threshold: the probability AUC is 1, the hard-prediction AUROC (the reference's) 0.75.
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.7, 0.45])
    assert classification_metrics(y, _binary(p1), n_boot=0)["roc_auc"] == 1.0
    assert skm.roc_auc_score(y, (p1 >= 0.5).astype(int)) == pytest.approx(0.75)
    # And the other way round: a false positive ranked high lowers only the ranking AUC.
    p2 = np.array([0.1, 0.9, 0.7, 0.6])
    assert classification_metrics(y, _binary(p2), n_boot=0)["roc_auc"] == pytest.approx(0.5)
    assert skm.roc_auc_score(y, (p2 >= 0.5).astype(int)) == pytest.approx(0.75)


def test_multiclass_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, p, n_boot=0)
    pred = p.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert len(m["confusion"]) == 3


def test_vectorised_pieces_match_sklearn_on_identity_weights() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.random(200) * 0.5 + 0.4 * y, 2)  # rounding makes ties
    w = np.ones((1, 200))
    assert _weighted_auc(score, y == 1, w)[0] == pytest.approx(skm.roc_auc_score(y, score))
    # Multiplicities equal an explicitly repeated sample.
    idx = rng.integers(0, 200, 200)
    w2 = np.bincount(idx, minlength=200)[None].astype(float)
    assert _weighted_auc(score, y == 1, w2)[0] == pytest.approx(skm.roc_auc_score(y[idx], score[idx]))
    pred = (score > 0.5).astype(int)
    cm = skm.confusion_matrix(y, pred)[None].astype(float)
    got = _from_confusion(cm)
    assert got["f1"][0] == pytest.approx(skm.f1_score(y, pred))
    assert got["balanced_accuracy"][0] == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_bootstrap_intervals_bracket_the_estimate_and_are_reproducible() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 2000)
    p1 = np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1)
    a = classification_metrics(y, _binary(p1), n_boot=300, seed=5)
    b = classification_metrics(y, _binary(p1), n_boot=300, seed=5)
    assert a["intervals"] == b["intervals"]
    for k in ("accuracy", "balanced_accuracy", "f1", "roc_auc"):
        lo, hi = a["intervals"][k]
        assert lo < a[k] < hi and hi - lo < 0.1
    plain = classification_metrics(y, _binary(p1), n_boot=300, seed=5, stratified=False)
    assert plain["bootstrap"]["stratified"] is False and plain["intervals"]["roc_auc"][0] < a["roc_auc"]


def test_single_class_auc_is_none_and_bad_shapes_raise() -> None:
    m = classification_metrics(np.array([1, 1]), _binary([0.7, 0.2]), n_boot=10)
    assert m["roc_auc"] is None and m["intervals"]["roc_auc"] is None
    assert m["accuracy"] == 0.5
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 1]), np.ones((3, 2)) / 2)
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 2]), np.ones((2, 2)) / 2)


def test_ece_hand_case() -> None:
    # Two samples at confidence 0.7 (one right), two at 1.0 (both right).
    y = np.array([1, 0, 1, 0])
    p = _binary([0.7, 0.7, 1.0, 0.0])
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * abs(0.5 - 0.7))


def test_paired_difference_is_the_difference_of_mean_accuracies() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    a = [np.where(rng.random(400) < 0.9, y, 1 - y) for _ in range(3)]
    b = [np.where(rng.random(400) < 0.8, y, 1 - y) for _ in range(2)]
    r = paired_accuracy_difference(y, a, b, n_boot=300, seed=1)
    acc_a = [float((x == y).mean()) for x in a]
    acc_b = [float((x == y).mean()) for x in b]
    assert r["per_run_a"] == pytest.approx(acc_a) and r["per_run_b"] == pytest.approx(acc_b)
    assert r["difference"] == pytest.approx(np.mean(acc_a) - np.mean(acc_b))
    lo, hi = r["interval"]
    assert lo < r["difference"] < hi and 0 < lo  # ~10 points apart on 400 samples: clearly positive
    # Swapping the sides flips the sign and mirrors the interval (same resamples, same seed).
    s = paired_accuracy_difference(y, b, a, n_boot=300, seed=1)
    assert s["difference"] == pytest.approx(-r["difference"])
    assert s["interval"] == pytest.approx([-hi, -lo])


def test_paired_difference_cancels_shared_errors() -> None:
    # Two runs that differ on one sample: the paired interval is at most that sample's weight,
    # however many samples both get wrong (an unpaired interval would be ~ +-4 points here).
    y = np.zeros(1000, dtype=int)
    a = y.copy()
    a[:200] = 1  # 200 shared errors
    b = a.copy()
    b[500] = 1
    r = paired_accuracy_difference(y, [a], [b], n_boot=200, seed=0)
    assert r["difference"] == pytest.approx(0.001)
    assert 0 <= r["interval"][0] <= r["interval"][1] <= 0.006


@pytest.mark.parametrize("a, b", [([], [np.zeros(4)]), ([np.zeros(3)], [np.zeros(4)])])
def test_paired_difference_rejects_bad_runs(a: list, b: list) -> None:
    with pytest.raises(ValueError):
        paired_accuracy_difference(np.zeros(4, dtype=int), a, b, n_boot=10)

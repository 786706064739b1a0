"""Classification metrics from probabilities, with bootstrap 95% intervals.

ROC-AUC is computed from the predicted probabilities (binary: `probs[:, 1]`; multiclass:
one-vs-rest macro), not from hard 0/1 predictions as the reference project did: a hard
AUROC only measures one operating point and equals balanced accuracy for two classes.

Point estimates come from scikit-learn. The bootstrap is vectorised: each resample is a
vector of multiplicities over the N samples, so every resample's confusion matrix is one
matrix product and every resample's AUC comes from weighted rank sums over the samples
sorted once by score (no per-resample Python loop, no per-resample sort).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn import metrics as skm

__all__ = ["ECE_BINS", "classification_metrics", "expected_calibration_error", "paired_accuracy_difference"]

ECE_BINS = 15
_CHUNK = 100  # resamples per vectorised chunk: bounds memory at ~CHUNK x N floats


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE (torchmetrics): equal-width confidence bins on (0, 1], weighted
    |accuracy - confidence|."""
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    p = torch.as_tensor(np.asarray(probs, dtype=np.float64))
    y = torch.as_tensor(np.asarray(y_true, dtype=np.int64))
    return float(multiclass_calibration_error(p, y, num_classes=p.shape[1], n_bins=n_bins, norm="l1"))


def _check(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be [N, C] with N = len(y_true); got {p.shape} for N={y.shape[0]}")
    if p.shape[1] < 2:
        raise ValueError("probs needs at least two columns (one per class)")
    if y.size == 0:
        raise ValueError("no samples")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in [0, {p.shape[1] - 1}]")
    return y, p


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    c = p.shape[1]
    present = np.unique(y)
    if c == 2:
        if len(present) < 2:
            return None
        return float(skm.roc_auc_score(y, p[:, 1]))
    if len(present) < c:
        return None  # one-vs-rest needs every class present
    # sklearn's multiclass mode wants rows summing to 1; average per-class OvR AUCs directly.
    return float(np.mean([skm.roc_auc_score(y == k, p[:, k]) for k in range(c)]))


def _from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """accuracy, balanced accuracy, F1 for a stack of confusion matrices [B, C, C] (true, pred)."""
    c = cm.shape[-1]
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support = cm.sum(2)
    predicted = cm.sum(1)
    total = cm.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = tp.sum(1) / total
        recall = np.where(support > 0, tp / np.maximum(support, 1e-300), np.nan)
        bal = np.nanmean(recall, axis=1)
        denom = support + predicted  # 2tp + fp + fn
        f1_per = np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-300), 0.0)
    f1 = f1_per[:, 1] if c == 2 else f1_per.mean(1)
    return {"accuracy": acc, "balanced_accuracy": bal, "f1": f1}


def _weighted_auc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC for each row of `weights` [B, N] (sample multiplicities); ties count 1/2."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    pos = positive[order]
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores
    wp = np.add.reduceat(w * pos, starts, axis=1)
    wn = np.add.reduceat(w * ~pos, starts, axis=1)
    neg_below = np.cumsum(wn, axis=1) - wn
    n_pos, n_neg = wp.sum(1), wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (wp * (neg_below + 0.5 * wn)).sum(1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _resample_weights(y: np.ndarray, n: int, rng: np.random.Generator, stratified: bool) -> np.ndarray:
    """Multiplicities [n, N] of bootstrap resamples (stratified keeps each class's count)."""
    big_n = len(y)
    w = np.zeros((n, big_n), dtype=np.float64)
    rows = np.arange(n)[:, None]
    groups = [np.flatnonzero(y == k) for k in np.unique(y)] if stratified else [np.arange(big_n)]
    for members in groups:
        draw = members[rng.integers(0, len(members), size=(n, len(members)))]
        np.add.at(w, (np.broadcast_to(rows, draw.shape), draw), 1.0)
    return w


def _bootstrap(
    y: np.ndarray, p: np.ndarray, n_boot: int, seed: int, stratified: bool
) -> dict[str, np.ndarray]:
    c = p.shape[1]
    pred = p.argmax(1)
    onehot = np.zeros((len(y), c * c))
    onehot[np.arange(len(y)), y * c + pred] = 1.0
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"accuracy": [], "balanced_accuracy": [], "f1": [], "roc_auc": []}
    for start in range(0, n_boot, _CHUNK):
        w = _resample_weights(y, min(_CHUNK, n_boot - start), rng, stratified)
        cm = (w @ onehot).reshape(-1, c, c)
        for k, v in _from_confusion(cm).items():
            out[k].append(v)
        if c == 2:
            auc = _weighted_auc(p[:, 1], y == 1, w)
        else:
            auc = np.mean([_weighted_auc(p[:, k], y == k, w) for k in range(c)], axis=0)
        out["roc_auc"].append(auc)
    return {k: np.concatenate(v) for k, v in out.items()}


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    probs: Sequence[Sequence[float]] | np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    stratified: bool = True,
) -> dict[str, Any]:
    """Metrics of class probabilities `probs` [N, C] against integer labels `y_true` [N].

    Returns a JSON-ready dict: `n`, `accuracy`, `balanced_accuracy`, `f1` (binary: class 1
    is positive; multiclass: macro), `roc_auc` (from probabilities; None when a needed class
    is absent), `ece` (15 bins, top-label), `confusion` (rows true, columns predicted),
    `class_names`, `support`, and `intervals` {metric: [low, high]} from `n_boot` bootstrap
    resamples (percentile 95%; `stratified` keeps each class's count, so the AUC is always
    defined), plus `bootstrap` {n_boot, seed, stratified}. `n_boot=0` skips intervals.
    """
    y, p = _check(y_true, probs)
    c = p.shape[1]
    pred = p.argmax(1)
    labels = list(range(c))
    cm = skm.confusion_matrix(y, pred, labels=labels)
    f1 = (
        skm.f1_score(y, pred, pos_label=1, average="binary", labels=labels, zero_division=0)
        if c == 2
        else skm.f1_score(y, pred, average="macro", labels=labels, zero_division=0)
    )
    present = np.unique(y)
    # sklearn's balanced accuracy averages recall over the classes present in y_true.
    result: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(np.mean([cm[k, k] / cm[k].sum() for k in present])),
        "f1": float(f1),
        "roc_auc": _roc_auc(y, p),
        "ece": expected_calibration_error(y, p),
        "confusion": cm.astype(int).tolist(),
        "support": cm.sum(1).astype(int).tolist(),
        "class_names": list(class_names) if class_names is not None else [str(k) for k in labels],
    }
    if class_names is not None and len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for {c} probability columns")
    if n_boot > 0:
        boot = _bootstrap(y, p, n_boot, seed, stratified)
        intervals = {}
        for k, v in boot.items():
            v = v[np.isfinite(v)]
            intervals[k] = [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v.size else None
        result["intervals"] = intervals
        result["bootstrap"] = {"n_boot": int(n_boot), "seed": int(seed), "stratified": bool(stratified), "level": 0.95}
    return result


def paired_accuracy_difference(
    y_true: Sequence[int] | np.ndarray,
    preds_a: Sequence[Sequence[int] | np.ndarray],
    preds_b: Sequence[Sequence[int] | np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    stratified: bool = True,
) -> dict[str, Any]:
    """Mean accuracy of the runs `preds_a` minus that of `preds_b` (hard predictions [N] of
    several seeds each, on the same N test samples), with a paired bootstrap 95% interval.

    Every resample reweights the test samples once and applies the same weights to all runs,
    so the interval reflects only the test set's sampling; the runs' seed-to-seed spread
    enters through the means. Returns {difference, interval, mean_a, mean_b, per_run_a,
    per_run_b, n, bootstrap}.
    """
    y = np.asarray(y_true)
    runs = [np.asarray(r) for r in (*preds_a, *preds_b)]
    if y.ndim != 1 or not len(preds_a) or not len(preds_b):
        raise ValueError("need labels [N] and at least one run on each side")
    if any(r.shape != y.shape for r in runs):
        raise ValueError(f"every run needs {y.shape[0]} predictions, one per test sample")
    hits = np.stack([r == y for r in runs]).astype(np.float64)  # [runs, N]
    # Per-sample contribution to mean(acc_a) - mean(acc_b): one weighted sum per resample.
    k = len(preds_a)
    contrib = hits[:k].mean(0) - hits[k:].mean(0)
    acc = hits.mean(1)
    rng = np.random.default_rng(seed)
    diffs = [
        _resample_weights(y, min(_CHUNK, n_boot - start), rng, stratified) @ contrib / len(y)
        for start in range(0, n_boot, _CHUNK)
    ]
    boot = np.concatenate(diffs) if diffs else np.empty(0)
    return {
        "n": int(len(y)),
        "difference": float(contrib.mean()),
        "interval": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot.size else None,
        "mean_a": float(acc[:k].mean()),
        "mean_b": float(acc[k:].mean()),
        "per_run_a": acc[:k].tolist(),
        "per_run_b": acc[k:].tolist(),
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "stratified": bool(stratified), "level": 0.95},
    }

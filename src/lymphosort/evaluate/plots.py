"""PNG plots for run folders: ROC, confusion matrix, reliability diagram, training curves.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot), so nothing
touches a global backend or a display, and plotting is safe in worker processes.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["plot_confusion", "plot_reliability", "plot_roc", "plot_training_curves", "save_figure"]

PathLike = str | os.PathLike[str]


def save_figure(fig: Figure, path: PathLike) -> Path:
    """`fig` as a PNG at `path`, written atomically (a killed run leaves no truncated image)."""
    from lymphosort.atomic import atomic_write

    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def _names(class_names: Sequence[str] | None, c: int) -> list[str]:
    return list(class_names) if class_names is not None else [str(k) for k in range(c)]


def plot_roc(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    path: PathLike,
    class_names: Sequence[str] | None = None,
    title: str = "ROC",
) -> Path:
    """ROC curve from probabilities: class 1 vs rest for two classes, one curve per class otherwise."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=float)
    names = _names(class_names, p.shape[1])
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    classes = [1] if p.shape[1] == 2 else range(p.shape[1])
    for k in classes:
        positive = y == k
        if positive.all() or not positive.any():
            continue  # undefined for a single class
        fpr, tpr, _ = roc_curve(positive, p[:, k])
        ax.plot(fpr, tpr, lw=1.5, label=f"{names[k]} (AUC {roc_auc_score(positive, p[:, k]):.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_confusion(
    confusion: Sequence[Sequence[int]] | np.ndarray,
    path: PathLike,
    class_names: Sequence[str] | None = None,
    title: str = "Confusion (rows: true)",
) -> Path:
    """Confusion matrix shaded by row-normalised rate, annotated with counts and rates."""
    cm = np.asarray(confusion, dtype=float)
    names = _names(class_names, cm.shape[0])
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(1.2 * len(names) + 2, 1.2 * len(names) + 1.5))
    ax = fig.add_subplot()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}\n{rates[i, j]:.1%}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def plot_reliability(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    path: PathLike,
    n_bins: int = 15,
    title: str = "Reliability (top label)",
) -> Path:
    """Top-label reliability diagram (same bins as the ECE) with a confidence histogram."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=float)
    conf = p.max(1)
    correct = p.argmax(1) == y
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    acc = np.bincount(bins, weights=correct, minlength=n_bins) / np.maximum(counts, 1)
    edges = np.linspace(0, 1, n_bins + 1)
    fig = Figure(figsize=(4.5, 5.5))
    ax, axh = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1)
    filled = counts > 0
    ax.bar(edges[:-1][filled], acc[filled], width=1 / n_bins, align="edge", edgecolor="k", alpha=0.7, label="accuracy")
    ax.set(ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
    axh.bar(edges[:-1], counts, width=1 / n_bins, align="edge", color="0.5")
    axh.set(xlabel="confidence", ylabel="count")
    return save_figure(fig, path)


def _read_history(history: Iterable[Mapping[str, Any]] | PathLike) -> list[dict[str, float]]:
    if isinstance(history, (str, os.PathLike)):
        with open(history, newline="", encoding="utf-8") as fh:
            rows: list[Mapping[str, Any]] = list(csv.DictReader(fh))
    else:
        rows = list(history)
    out = []
    for row in rows:
        clean = {}
        for k, v in row.items():
            try:
                clean[str(k)] = float(v)
            except (TypeError, ValueError):
                continue  # blank cells (e.g. Lightning's CSV logger) and text columns
        out.append(clean)
    return out


def plot_training_curves(
    history: Iterable[Mapping[str, Any]] | PathLike,
    path: PathLike,
    keys: Sequence[str] | None = None,
    x_key: str = "epoch",
    title: str = "Training",
) -> Path:
    """Per-epoch curves from a list of dicts or a metrics CSV; losses and other metrics on two panels.

    `keys` defaults to every numeric column except `x_key` and "step"; columns with "loss"
    in their name go to the left panel.
    """
    rows = _read_history(history)
    if not rows:
        raise ValueError("training history is empty")
    if keys is None:
        seen: dict[str, None] = {}
        for r in rows:
            for k in r:
                if k not in (x_key, "step"):
                    seen[k] = None
        keys = list(seen)
    fig = Figure(figsize=(9, 3.8))
    ax_loss, ax_other = fig.subplots(1, 2)
    for k in keys:
        pts = [(r.get(x_key, i), r[k]) for i, r in enumerate(rows) if k in r and np.isfinite(r[k])]
        if not pts:
            continue
        xs, ys = zip(*pts)
        (ax_loss if "loss" in k else ax_other).plot(xs, ys, marker=".", label=k)
    for ax, name in ((ax_loss, "loss"), (ax_other, "metric")):
        ax.set(xlabel=x_key, ylabel=name)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)

"""A 2-D map of model features coloured by class (t-SNE by default) for the report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from lymphosort.errors import ConfigError
from lymphosort.evaluate.plots import save_figure

__all__ = ["embed_2d", "embedding_map"]

METHODS = ("tsne", "umap", "pca")


def _subsample(labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """Seeded indices, at most `max_points`, with every class keeping its share (a rare class
    stays visible) and at least one point each."""
    n = labels.size
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(labels, return_counts=True)
    take = np.maximum(1, (max_points * sizes) // n)
    while take.sum() > max(max_points, classes.size):  # the floor of 1 per class can overshoot
        take[np.argmax(take)] -= 1
    keep = [rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(keep))


def embed_2d(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """[N, F] -> [N, 2]; PCA to 50 dimensions first when wider (t-SNE's usual pre-step)."""
    if method not in METHODS:
        raise ConfigError(f"unknown embedding method {method!r}; choose one of {', '.join(METHODS)}")
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float32)
    n = x.shape[0]
    if x.shape[1] > 50 and n > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    if method == "pca":
        k = min(2, x.shape[1], n)
        out = PCA(n_components=k, random_state=seed).fit_transform(x)
        return np.pad(out, ((0, 0), (0, 2 - k)))
    if method == "umap":
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigError("method 'umap' needs the umap-learn package; use 'tsne'") from None
        return np.asarray(umap.UMAP(n_components=2, random_state=seed).fit_transform(x))
    from sklearn.manifold import TSNE

    # perplexity must stay below the sample count; 30 is the usual value for larger maps
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    if n >= 1000:
        return tsne.fit_transform(x)
    # Small maps gain nothing from OpenMP threads, and on a busy machine their spin-waits
    # can make a one-second fit take a minute.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return tsne.fit_transform(x)


def embedding_map(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    method: str = "tsne",
    seed: int = 0,
    *,
    max_points: int = 2000,
    title: str | None = None,
) -> Path:
    """Scatter of a 2-D embedding of `features` [N, F], one colour per class; writes a PNG.

    At most `max_points` points (seeded, class-proportional subsample) keep t-SNE to seconds
    on a CPU. Returns the PNG path.
    """
    x = np.asarray(features)
    y = np.asarray(labels).astype(int).ravel()
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ValueError(f"features must be [N, F] with N = len(labels); got {x.shape} and {y.size} labels")
    if y.size < 4:
        raise ValueError(f"an embedding map needs at least 4 points, got {y.size}")
    if y.min() < 0 or y.max() >= len(class_names):
        raise ValueError(f"labels must lie in [0, {len(class_names)}) to match class_names")
    idx = _subsample(y, max_points, seed)
    xy = embed_2d(x[idx], method, seed)
    y = y[idx]
    name = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}[method]
    fig = Figure(figsize=(6, 5.4))
    ax = fig.add_subplot()
    for c, cname in enumerate(class_names):
        m = y == c
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.7, label=f"{cname} ({int(m.sum()):,})", rasterized=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{name} of {y.size:,} feature vectors")
    ax.legend(markerscale=3, fontsize=8, loc="best")
    return save_figure(fig, path)

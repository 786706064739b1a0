"""A PNG of sample crops per class: what a data set looks like at a glance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["write_sample_grid"]


def write_sample_grid(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    split: str = "test",
    n: int = 16,
    task: str = "3-class",
    seed: int = 0,
) -> Path:
    """A PNG with one row per class of up to ``n`` seeded-random images, labelled by name.

    Uses matplotlib's Agg canvas directly, so no global backend is switched.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lymphosort.data import lymphomnist as lm
    from lymphosort.errors import ConfigError

    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    data = lm.load_split(root, split, task)
    labels = data.labels.numpy()
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(0.8 * n + 0.8, 0.85 * len(data.classes) + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(data.classes), n, squeeze=False)
    for c, name in enumerate(data.classes):
        rows = np.flatnonzero(labels == c)
        pick = np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False)) if len(rows) else rows
        for j in range(n):
            ax: Any = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(pick):
                ax.imshow(data.images[pick[j]].numpy(), cmap="gray", vmin=0, vmax=255)
            else:
                ax.set_axis_off()
        axes[c][0].set_axis_on()
        axes[c][0].set_ylabel(f"{name} ({len(rows)})", rotation=0, ha="right", va="center")
    prov = data.provenance.get("source", "?")
    fig.suptitle(f"LymphoMNIST {split}, {data.task} ({prov}, {data.split_id})", fontsize=9)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=80, bbox_inches="tight")
    return out

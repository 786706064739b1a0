"""Plots the report needs that evaluate/plots.py has no counterpart for."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from lymphosort.evaluate.plots import save_figure

__all__ = ["plot_latency_histogram"]

_PCTL_KEYS = (("p50", "p50_latency_us", "--"), ("p99", "p99_latency_us", ":"), ("max", "max_latency_us", "-."))


def _from_report(rep: Mapping[str, Any]) -> tuple[np.ndarray | None, float]:
    """Bin counts (and bin width) from a realtime report's `latency_histogram`, if it has one:
    a list of 1-us bin counts, or {"counts": [...], "bin_us": w}."""
    h = rep.get("latency_histogram")
    if isinstance(h, Mapping) and h.get("counts") is not None:
        return np.asarray(h["counts"], dtype=float), float(h.get("bin_us", 1.0))
    if isinstance(h, (list, tuple, np.ndarray)):
        return np.asarray(h, dtype=float), 1.0
    return None, 1.0


# long by design: one figure's panels and annotations
def plot_latency_histogram(
    data: Sequence[float] | np.ndarray | Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    counts: bool = False,
    bin_us: float = 1.0,
    deadline_us: float | None = None,
    n_bins: int = 60,
    title: str = "Decision latency",
) -> Path:
    """Histogram of decision latencies (microseconds), log count axis, p50/p99 marked.

    `data` is one of:
    - the latencies themselves;
    - bin counts (`counts=True`), bin i holding [i * bin_us, (i + 1) * bin_us), e.g.
      `realtime.report.LatencyHistogram.counts` (1-us bins, last bin = overflow);
    - a realtime report dict: its `latency_histogram` (counts) when present, else only its
      p50/p99/max and deadline as marked lines (the figure says so), so the realtime stage
      always gets a figure.
    Counts are regrouped into about `n_bins` bars up to the last non-empty bin, so a
    100,000-bin histogram plots as fast as a short one.
    """
    marks: dict[str, float] = {}
    note = ""
    if isinstance(data, Mapping):
        rep = data
        if deadline_us is None and isinstance(rep.get("deadline_us"), (int, float)):
            deadline_us = float(rep["deadline_us"])
        arr_or_none, bin_us = _from_report(rep)
        counts = arr_or_none is not None
        arr = arr_or_none if arr_or_none is not None else np.zeros(0)
        if not counts:
            marks = {name: float(rep[k]) for name, k, _ in _PCTL_KEYS if isinstance(rep.get(k), (int, float))}
            note = "no latency histogram stored in the report: percentiles only"
    else:
        arr = np.asarray(data, dtype=float).ravel()

    if counts:
        if arr.size and (arr < 0).any():
            raise ValueError("histogram counts must be non-negative")
        nz = np.flatnonzero(arr)
        arr = arr[: nz[-1] + 1] if nz.size else arr[:1]
        group = max(1, int(np.ceil(arr.size / n_bins)))
        pad = (-arr.size) % group
        heights = np.pad(arr, (0, pad)).reshape(-1, group).sum(1)
        edges = np.arange(heights.size + 1) * group * float(bin_us)
        cum = np.cumsum(arr)
        total = float(cum[-1]) if cum.size else 0.0
        for name, q in (("p50", 50), ("p99", 99)):
            if total > 0:
                marks[name] = float((np.searchsorted(cum, q / 100 * total) + 1) * bin_us)
    elif not note:
        arr = arr[np.isfinite(arr)]
        heights, edges = np.histogram(arr, bins=n_bins) if arr.size else (np.zeros(1), np.array([0.0, 1.0]))
        total = float(arr.size)
        if arr.size:
            marks = {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99))}
    else:
        heights, edges = np.zeros(0), np.zeros(1)
        total = float(data.get("decisions") or 0) if isinstance(data, Mapping) else 0.0

    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    if heights.size:
        ax.bar(edges[:-1], heights, width=np.diff(edges), align="edge", color="#4a78a8", edgecolor="none")
    styles = {name: style for name, _, style in _PCTL_KEYS}
    for name, v in marks.items():
        ax.axvline(v, color="k", ls=styles[name], lw=1, label=f"{name} {v:,.0f} us")
    if deadline_us is not None:
        ax.axvline(deadline_us, color="#c0392b", lw=1.5, label=f"deadline {deadline_us:,.0f} us")
    if np.any(heights > 0):
        ax.set_yscale("log")
    if note:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.4")
        ax.set_yticks([])
        right = max([*marks.values(), deadline_us or 0.0, 1.0])
        ax.set_xlim(0, right * 1.1)
    ax.set(xlabel="latency (us)", ylabel="decisions", title=f"{title} (n={int(total):,})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return save_figure(fig, path)

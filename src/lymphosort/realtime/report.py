"""Measurement: latency histogram, ground-truth scoring, the report and the live view.

Everything here has bounded memory whatever the run length: latencies go into a fixed
1-us histogram (exact percentiles at 1 us resolution up to 100 ms, an overflow bin above),
and ground truth is scored per sequence, then reduced to counts and probability
histograms.

Scoring against LymphoSim truth (per sequence, i.e. per replay of the pool):
- evaluated cells: cells that entered and left the view within the sequence and were whole
  and isolated in the first frame where their centre reached the trigger line;
- a decision is matched to the truth cell whose centre is nearest to the detection (within
  `match_px`) in the decision's frame; decisions on cells outside the evaluated set (cut by
  the sequence boundary, or not isolated) are neither hits nor false positives;
- detection_recall = evaluated cells with a decision / evaluated cells;
- detection_precision = evaluated cells decided once / decisions on evaluated cells,
  unmatched decisions and repeats (a second decision on a cell counts as a false one); a
  decision on one blob covering several cells is counted apart (`cluster_decisions`);
- accuracy: first decision per evaluated cell, argmax vs the task label (classified cells);
- purity / yield: of the target class among evaluated cells (rejects count as not sorted).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from lymphosort.data.synth.flow import CellTruth

__all__ = ["Evaluator", "LatencyHistogram", "LiveView", "TruthLedger", "count_metrics"]


class LatencyHistogram:
    """Latencies in 1-us bins up to `max_us`, plus the exact maximum."""

    def __init__(self, max_us: int = 100_000) -> None:
        self.counts = np.zeros(max_us + 2, dtype=np.int64)
        self.max_us = max_us
        self.max_seen = 0.0
        self.n = 0

    def add(self, us: float) -> None:
        self.counts[min(int(us), self.max_us + 1) if us > 0 else 0] += 1
        self.n += 1
        if us > self.max_seen:
            self.max_seen = us

    def compact(self, bin_us: int = 10, max_us: int = 10_000) -> dict[str, Any]:
        """Coarser bins for the JSON report: counts of [i*bin_us, (i+1)*bin_us) up to the last
        non-empty bin below `max_us`, and how many latencies lay at or above `max_us`."""
        top = min(max_us, self.max_us + 1)
        c = self.counts[:top]
        c = c[: len(c) - len(c) % bin_us].reshape(-1, bin_us).sum(1)
        nz = np.flatnonzero(c)
        c = c[: nz[-1] + 1] if nz.size else c[:0]
        return {"bin_us": bin_us, "counts": c.tolist(), "overflow_us": max_us,
                "overflow": int(self.n - c.sum())}

    def sparse(self) -> dict[str, Any]:
        """The exact histogram as its non-empty bins (to merge the histograms of several workers)."""
        nz = np.flatnonzero(self.counts)
        return {"bins": nz.tolist(), "counts": self.counts[nz].tolist(), "max_seen": self.max_seen, "max_us": self.max_us}

    @classmethod
    def merged(cls, parts: list[dict[str, Any]]) -> "LatencyHistogram":
        """One histogram of the latencies of several `sparse()` histograms."""
        h = cls(max(p["max_us"] for p in parts) if parts else 100_000)
        for p in parts:
            np.add.at(h.counts, np.asarray(p["bins"], dtype=np.int64), np.asarray(p["counts"], dtype=np.int64))
            h.max_seen = max(h.max_seen, float(p["max_seen"]))
        h.n = int(h.counts.sum())
        return h

    def percentile(self, q: float) -> float | None:
        """Upper edge of the bin holding the q-th percentile (conservative by < 1 us)."""
        if self.n == 0:
            return None
        rank = int(np.ceil(q / 100.0 * self.n))
        b = int(np.searchsorted(np.cumsum(self.counts), max(1, rank)))
        return float(min(b + 1, self.max_seen)) if b <= self.max_us else float(self.max_seen)


@dataclass
class _CellLog:
    cls: int
    first: int
    last: int
    cross_ok: bool | None = None  # whole and isolated when the centre reached the trigger line


class TruthLedger:
    """Ground truth of every frame the source produced (dropped frames too), per sequence.

    Filled as frames arrive; read by the scorer only for sequences the stream has left.
    """

    def __init__(self, trigger_x: float) -> None:
        self.trigger_x = float(trigger_x)
        self.sequences: dict[int, dict[str, Any]] = {}

    def observe(self, index: int, sequence: int, truth: list[CellTruth]) -> None:
        s = self.sequences.get(sequence)
        if s is None:
            s = self.sequences[sequence] = {"first": index, "last": index, "cells": {}}
        s["last"] = index
        cells = s["cells"]
        for c in truth:
            log = cells.get(c.cell_id)
            if log is None:
                log = cells[c.cell_id] = _CellLog(c.cls, index, index)
            log.last = index
            if log.cross_ok is None and c.center[0] >= self.trigger_x:
                log.cross_ok = bool(c.whole and c.isolated)


@dataclass
class Evaluator:
    """Scores decisions against a `TruthLedger`; reduces each finished sequence to counts."""

    ledger: TruthLedger
    label_map: Mapping[int, int] | None  # on-disk class -> task label (None: no accuracy)
    target: int  # task label being sorted
    match_px: float = 10.0
    bins: int = 100
    _pending: dict[int, list[tuple[int | None, int, float, bool, bool]]] = field(default_factory=dict)
    _jobs: deque[Iterator[bool]] = field(default_factory=deque)  # finished sequences being scored
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("eval_cells", "eval_detected", "eval_decisions", "unmatched", "repeats", "acc_n", "acc_ok",
         "target_cells", "sorted", "sorted_target", "clusters", "clusters_sorted"), 0))
    # probability histograms of evaluated cells by (is_target, eligible) for the purity/yield curve
    hist: np.ndarray = field(default_factory=lambda: np.zeros((2, 101), np.int64))
    n_target_total: int = 0

    def record(self, sequence: int, truth: list[CellTruth] | None, x: float, y: float,
               box: tuple[int, int, int, int], pred: int, p_target: float, sort: bool, eligible: bool) -> None:
        cid: int | None = None
        if truth:
            best = self.match_px ** 2
            for c in truth:
                d2 = (c.center[0] - x) ** 2 + (c.center[1] - y) ** 2
                if d2 <= best:
                    best, cid = d2, c.cell_id
            if cid is None and any(box[0] <= c.center[0] < box[2] and box[1] <= c.center[1] < box[3] for c in truth):
                cid = -1  # one blob over several cells: a real object, scored as a cluster
        self._pending.setdefault(sequence, []).append((cid, pred, p_target, sort, eligible))

    def finish(self, up_to: int | None = None, *, defer: bool = False) -> None:
        """Score every ledger sequence < `up_to` (all when None) and forget its details.

        Scoring a sequence of 1,500 frames takes ~1.5 ms: on the decision thread that would
        stall the stream for several frames. With `defer` it is only queued, and `work()`
        advances it in short steps while the stream is idle; never more than two sequences
        wait (memory stays bounded when the stream is never idle)."""
        for seq in sorted(list(self.ledger.sequences)):
            if up_to is not None and seq >= up_to:
                break
            s = self.ledger.sequences.pop(seq)
            self._jobs.append(self._score(s, self._pending.pop(seq, [])))
        if up_to is None:
            self._pending.clear()
        if not defer or len(self._jobs) > 2:
            self.work()

    def work(self, steps: int | None = None) -> bool:
        """Advance queued scoring by `steps` short steps (all of it when None); True while some is left."""
        while self._jobs and (steps is None or steps > 0):
            if not next(self._jobs[0], False):  # steps yield True; False: that sequence is done
                self._jobs.popleft()
            if steps is not None:
                steps -= 1
        return bool(self._jobs)

    def _score(self, s: dict[str, Any], decisions: list[tuple[int | None, int, float, bool, bool]],
               chunk: int = 32) -> Iterator[bool]:
        """Reduce one sequence to counts, yielding every `chunk` items (a step of ~20 us)."""
        c = self.counts
        cells: dict[int, _CellLog] = s["cells"]
        evaluated = {cid for cid, log in cells.items()
                     if log.cross_ok and log.first > s["first"] and log.last < s["last"]}
        yield True
        seen: set[int] = set()
        first_dec: dict[int, tuple[int, float, bool, bool]] = {}
        for i, (cid, pred, p, sort, ok) in enumerate(decisions, 1):
            if i % chunk == 0:
                yield True
            if cid is None:
                c["unmatched"] += 1
                continue
            if cid == -1:
                c["clusters"] += 1
                c["clusters_sorted"] += int(sort)
                continue
            if cid not in evaluated:
                continue  # don't-care: cut by the sequence boundary or not isolated
            c["eval_decisions"] += 1
            if cid in seen:
                c["repeats"] += 1
                continue
            seen.add(cid)
            first_dec[cid] = (pred, p, sort, ok)
        c["eval_cells"] += len(evaluated)
        c["eval_detected"] += len(seen)
        for i, cid in enumerate(evaluated, 1):
            if i % chunk == 0:
                yield True
            lab = self.label_map.get(cells[cid].cls) if self.label_map is not None else None
            is_t = lab == self.target
            c["target_cells"] += int(is_t)
            pred, p, sort, ok = first_dec.get(cid, (-1, 0.0, False, False))
            c["sorted"] += int(sort)
            c["sorted_target"] += int(sort and is_t)
            if cid in first_dec and ok and lab is not None and pred >= 0:
                c["acc_n"] += 1
                c["acc_ok"] += int(pred == lab)
            if ok and cid in first_dec:
                self.hist[int(is_t), min(100, int(p * 100))] += 1
        self.n_target_total = c["target_cells"]

    def metrics(self) -> dict[str, Any]:
        c = self.counts
        curve = []
        for t in range(0, 101, 5):
            tp = int(self.hist[1, t:].sum())
            n_s = tp + int(self.hist[0, t:].sum())
            curve.append({"threshold": t / 100, "purity": tp / n_s if n_s else None,
                          "yield": tp / c["target_cells"] if c["target_cells"] else None, "n_sorted": n_s})
        return {**count_metrics(c), "purity_yield_curve": curve, "eval_counts": dict(c)}


def count_metrics(c: dict[str, int]) -> dict[str, Any]:
    """The scores of an `Evaluator`'s counts (also of several evaluators' summed counts)."""
    n_dec = c["eval_decisions"] + c["unmatched"]
    good = c["eval_detected"]
    return {
        "eval_cells": c["eval_cells"],
        "detection_recall": good / c["eval_cells"] if c["eval_cells"] else None,
        "detection_precision": good / n_dec if n_dec else None,
        "missed_cells": c["eval_cells"] - good,
        "repeat_decisions": c["repeats"],
        "unmatched_decisions": c["unmatched"],
        "cluster_decisions": c["clusters"],  # one blob over several cells (not scored)
        "cluster_sorted": c["clusters_sorted"],  # ...that the gate would still have sorted
        "accuracy": c["acc_ok"] / c["acc_n"] if c["acc_n"] else None,
        "accuracy_n": c["acc_n"],
        "purity": c["sorted_target"] / c["sorted"] if c["sorted"] else None,
        "yield": c["sorted_target"] / c["target_cells"] if c["target_cells"] else None,
        "target_cells": c["target_cells"],
    }


class LiveView:
    """A rich Live panel refreshed from `snapshot()` on its own thread (a few ms per refresh:
    it holds the GIL, so leave it off when measuring latency)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], refresh_hz: float = 4.0) -> None:
        self.snapshot = snapshot
        self.period = 1.0 / refresh_hz
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _table(self) -> Any:
        from rich.table import Table

        s = self.snapshot()
        t = Table(title="lymphosort realtime", show_header=False, min_width=48)
        for k, v in s.items():
            t.add_row(k, f"{v:,.1f}" if isinstance(v, float) else str(v))
        return t

    def _loop(self) -> None:
        from rich.live import Live

        with Live(self._table(), auto_refresh=False, transient=False) as live:
            while not self._stop.wait(self.period):
                live.update(self._table(), refresh=True)
            live.update(self._table(), refresh=True)

    def __enter__(self) -> "LiveView":
        self._thread = threading.Thread(target=self._loop, name="realtime-live", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


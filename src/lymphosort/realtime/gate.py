"""Sort gate, trigger events and their sinks, and the purity/yield trade-off.

The gate sorts a cell when the probability of the target class reaches `threshold` and
the tracker did not flag it (doublet, close neighbour). Purity = target cells among those
sorted; yield = sorted target cells among all target cells that passed. Raising the
threshold buys purity with yield; `threshold_for_purity` picks the lowest threshold whose
purity on labelled calibration data reaches the target (the highest yield that does).

Times in a `TriggerEvent` are `time.perf_counter()` seconds of this process (the same
clock as the frame arrival stamps), plus the frame's source time.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Callable, Protocol, Sequence

import numpy as np

from lymphosort.errors import ConfigError

__all__ = [
    "CallbackSink",
    "Gate",
    "JsonlSink",
    "ListSink",
    "TriggerEvent",
    "TriggerSink",
    "calibrate_threshold",
    "purity_yield_curve",
    "threshold_for_purity",
]


@dataclass(frozen=True)
class TriggerEvent:
    cell_id: int  # track id (ground-truth ids are kept apart, in the evaluator)
    frame: int  # index of the frame the decision was made on
    t_frame_s: float  # source time of that frame (s)
    t_arrival: float  # perf_counter() s when the frame arrived (real-time: when it was due)
    t_decision: float  # perf_counter() s when the decision was made
    cls: str  # predicted class name ('' when not classified)
    prob: float  # probability of the target class
    sort: bool
    x: float  # cell centre in the frame (px)
    y: float
    reason: str  # 'target', 'below-threshold', 'doublet', 'neighbour'

    @property
    def latency_us(self) -> float:
        return (self.t_decision - self.t_arrival) * 1e6


@dataclass(frozen=True)
class Gate:
    target: int  # class index to sort
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must lie in [0, 1], got {self.threshold}")

    def decide(self, prob_target: float, reject: str | None) -> tuple[bool, str]:
        if reject is not None:
            return False, reject
        if prob_target >= self.threshold:
            return True, "target"
        return False, "below-threshold"


class TriggerSink(Protocol):
    def emit(self, event: TriggerEvent) -> None: ...

    def close(self) -> None: ...


class CallbackSink:
    """Calls `fn(event)` on the decision thread (keep it short: it adds to the next cell's latency)."""

    def __init__(self, fn: Callable[[TriggerEvent], None]) -> None:
        self.fn = fn

    def emit(self, event: TriggerEvent) -> None:
        self.fn(event)

    def close(self) -> None:
        pass


class ListSink:
    """Keeps the last `maxlen` events in memory (tests, notebooks); bounded like everything else."""

    def __init__(self, maxlen: int = 100_000) -> None:
        from collections import deque

        self.events: Any = deque(maxlen=maxlen)

    def emit(self, event: TriggerEvent) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


class JsonlSink:
    """One JSON object per line; buffered and written by the OS, flushed on close."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = self.path.open("w", encoding="utf-8", buffering=1 << 16)
        self._lock = threading.Lock()

    def emit(self, event: TriggerEvent) -> None:
        d = asdict(event)
        d["latency_us"] = round(event.latency_us, 1)
        with self._lock:
            if self._f is not None:
                self._f.write(json.dumps(d) + "\n")

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None


def purity_yield_curve(is_target: Sequence[bool] | np.ndarray, prob: Sequence[float] | np.ndarray,
                       eligible: Sequence[bool] | np.ndarray | None = None,
                       thresholds: Sequence[float] | np.ndarray | None = None) -> list[dict[str, float]]:
    """Purity and yield of sorting `prob >= t` (and `eligible`) for each threshold t.

    Purity is None where nothing is sorted. Yield's denominator is every target cell given,
    eligible or not (a rejected doublet is a lost target cell).
    """
    y = np.asarray(is_target, dtype=bool)
    p = np.asarray(prob, dtype=np.float64)
    ok = np.ones_like(y) if eligible is None else np.asarray(eligible, dtype=bool)
    ts = np.round(np.linspace(0.0, 1.0, 101), 4) if thresholds is None else np.asarray(thresholds, float)
    n_target = int(y.sum())
    out = []
    for t in ts:
        s = ok & (p >= t)
        n_s, tp = int(s.sum()), int((s & y).sum())
        out.append({"threshold": float(t), "n_sorted": n_s,
                    "purity": tp / n_s if n_s else None,
                    "yield": tp / n_target if n_target else None})
    return out


def threshold_for_purity(curve: list[dict[str, float]], target_purity: float) -> float:
    """Lowest threshold of `curve` whose purity reaches `target_purity` (1.0 if none does)."""
    if not 0.0 < target_purity <= 1.0:
        raise ConfigError(f"target purity must lie in (0, 1], got {target_purity}")
    for row in sorted(curve, key=lambda r: r["threshold"]):
        if row["purity"] is not None and row["purity"] >= target_purity:
            return float(row["threshold"])
    return 1.0


def calibrate_threshold(backend: Any, target: int, target_purity: float, label_map: dict[int, int] | None, *,
                        n: int = 2000, seed: int = 2024, preset: str = "default") -> tuple[float, list[dict[str, Any]]]:
    """Threshold reaching `target_purity` on `n` labelled LymphoSim crops (a calibration set
    apart from the stream: seed differs), and the calibration purity/yield curve.

    Chosen before the run, so the run's own purity is an honest check of the choice.
    """
    from lymphosort.data.synth import render_crops

    images, labels, _ = render_crops(n, seed=seed, preset=preset)
    lm = label_map or {i: i for i in range(len(backend.classes))}
    task = np.array([lm.get(int(c), -1) for c in labels])
    probs = np.concatenate([backend.predict_proba(images[i:i + 256]) for i in range(0, n, 256)])
    curve = purity_yield_curve(task == target, probs[:, target])
    return threshold_for_purity(curve, target_purity), curve

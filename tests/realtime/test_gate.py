from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lymphosort.errors import ConfigError
from lymphosort.realtime.gate import (CallbackSink, Gate, JsonlSink, ListSink, TriggerEvent, purity_yield_curve,
                                      threshold_for_purity)


def _event(i: int, sort: bool = True) -> TriggerEvent:
    return TriggerEvent(i, 10, 0.01, 1.0, 1.0002, "T", 0.9, sort, 100.0, 50.0, "target")


def test_gate_decides_and_rejects() -> None:
    g = Gate(target=1, threshold=0.7)
    assert g.decide(0.8, None) == (True, "target")
    assert g.decide(0.6, None) == (False, "below-threshold")
    assert g.decide(0.99, "doublet") == (False, "doublet")
    with pytest.raises(ConfigError):
        Gate(1, 1.5)


def test_purity_rises_and_yield_falls_with_threshold() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.4
    p = np.clip(np.where(y, 0.7, 0.3) + rng.normal(0, 0.2, 2000), 0, 1)
    curve = purity_yield_curve(y, p)
    ylds = [r["yield"] for r in curve]
    assert all(a >= b for a, b in zip(ylds, ylds[1:]))
    assert curve[0]["purity"] == pytest.approx(y.mean())
    t = threshold_for_purity(curve, 0.95)
    row = next(r for r in curve if r["threshold"] == t)
    assert row["purity"] >= 0.95 and t > 0.5
    assert threshold_for_purity(curve, 1.0) >= t
    with pytest.raises(ConfigError):
        threshold_for_purity(curve, 0.0)


def test_ineligible_cells_never_sort() -> None:
    curve = purity_yield_curve([True, True], [0.9, 0.9], eligible=[True, False])
    assert curve[50]["n_sorted"] == 1 and curve[50]["yield"] == 0.5


def test_sinks(tmp_path: Path) -> None:
    path = tmp_path / "events" / "trig.jsonl"
    sink = JsonlSink(path)
    for i in range(3):
        sink.emit(_event(i, sort=i != 1))
    sink.close()
    sink.emit(_event(9))  # after close: ignored, not a crash
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["cell_id"] for r in rows] == [0, 1, 2]
    assert rows[1]["sort"] is False and rows[0]["latency_us"] == pytest.approx(200.0, abs=1)
    got: list[TriggerEvent] = []
    CallbackSink(got.append).emit(_event(5))
    assert got[0].cell_id == 5
    ls = ListSink(maxlen=2)
    for i in range(5):
        ls.emit(_event(i))
    assert [e.cell_id for e in ls.events] == [3, 4]


def test_live_view_renders_a_snapshot() -> None:
    from rich.console import Console

    from lymphosort.realtime.report import LatencyHistogram, LiveView

    h = LatencyHistogram(max_us=1000)
    for us in (10.0, 20.0, 30.0, 5000.0):
        h.add(us)
    assert h.percentile(50) == 21.0 and h.percentile(100) == 5000.0 and h.max_seen == 5000.0
    comp = h.compact(bin_us=10, max_us=1000)
    assert comp["counts"] == [0, 1, 1, 1] and comp["overflow"] == 1
    snap = {"frames/s": 3900.0, "dropped_frames": 3, "p99_latency_us": h.percentile(99)}
    with LiveView(lambda: snap, refresh_hz=50.0) as live:
        table = live._table()
    console = Console(record=True, width=80)
    console.print(table)
    text = console.export_text()
    assert "dropped_frames" in text and "3,900.0" in text

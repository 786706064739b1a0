"""Several decision workers on one camera: each lane decided as the one-stream path decides it,
one ordered log, drops counted under overload, and a killed worker reported, not waited for."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lymphosort.realtime.backends import load_backend
from lymphosort.realtime.gate import Gate, TriggerEvent
from lymphosort.realtime.runner import RealtimeRunner, RunConfig
from lymphosort.realtime.sources import SimConfig, SimSource
from lymphosort.realtime.workers import EVENT_FIELDS, END, LanePool, OrderedMerge, run_workers

SIM = SimConfig(pool_frames=60, seed=5, fps=2000.0)


class _Collect:
    def __init__(self) -> None:
        self.events: list[TriggerEvent] = []

    def emit(self, e: TriggerEvent) -> None:
        self.events.append(e)

    def close(self) -> None:
        pass


def _key(frame: int, cell: int, cls: str, prob: float, sort: bool, reason: str) -> tuple:
    return frame, cell, cls, round(prob, 6), sort, reason


@pytest.fixture(scope="module")
def pool() -> LanePool:
    p = LanePool(SIM, lanes=2)
    yield p
    p.close()


def _ev(frame: int, lane: int, t: float) -> tuple:
    return tuple({"frame": frame, "lane": lane, "t_decision": t}.get(k, 0) for k in EVENT_FIELDS)


def test_ordered_merge_releases_a_frame_once_every_live_worker_has_passed_it() -> None:
    out: list[list[tuple]] = []
    m = OrderedMerge(2, out.append)
    m.add(0, 4, [_ev(2, 0, 0.1), _ev(5, 0, 0.3)])  # worker 0 is past frame 4; worker 1 has said nothing
    assert out == []
    m.add(1, 2, [_ev(1, 1, 0.2), _ev(3, 1, 0.4)])
    assert [(e[0], e[1]) for e in out[0]] == [(1, 1), (2, 0)]  # frames <= 2 are final
    m.add(1, END, [_ev(5, 1, 0.2)])  # worker 1 is done: worker 0's watermark (4) rules
    assert [(e[0], e[1]) for e in out[1]] == [(3, 1)]
    m.retire(0)  # worker 0 died or ended: nothing holds back its frame 5 any more
    assert [(e[0], e[1]) for e in out[2]] == [(5, 0), (5, 1)]
    assert m.released == [e for batch in out for e in batch]


def test_each_lane_is_decided_as_one_stream_and_the_log_is_ordered(pool: LanePool, tiny_onnx: Path) -> None:
    lossless = RunConfig(max_frames=60, realtime=False, drop="block")
    live: list[tuple] = []
    rep = run_workers(pool, str(tiny_onnx), "onnx", workers=2, target=1, threshold=0.5, run=lossless,
                      on_events=live.extend)
    assert rep["worker_errors"] == {} and [r["lane"] for r in rep["per_worker"]] == [0, 1]
    events = rep["events"]
    assert live == events  # streamed during the run, in the final order
    assert [(e[0], e[1]) for e in events] == sorted((e[0], e[1]) for e in events)  # (frame, lane) order
    assert rep["decisions"] == len(events) == sum(r["decisions"] for r in rep["per_worker"]) > 10
    backend = load_backend("onnx", tiny_onnx)
    for lane in (0, 1):  # lane k is LymphoSim seed + 1000 k, as a one-stream run sees it
        sink = _Collect()
        src = SimSource(replace(SIM, seed=SIM.seed + 1000 * lane))
        RealtimeRunner(src, backend, Gate(1, 0.5), sink, lossless).run()
        want = [_key(e.frame, e.cell_id, e.cls, e.prob, e.sort, e.reason) for e in sink.events]
        got = [_key(e[0], e[2], e[3], e[4], e[5], e[6]) for e in events if e[1] == lane]
        assert got == want and want


def test_overload_drops_are_counted_per_worker(tiny_onnx: Path) -> None:
    # a camera far faster than a core can decide, and a one-frame buffer: frames must be dropped
    fast = LanePool(replace(SIM, fps=200_000.0, pool_frames=20), lanes=2)
    run = RunConfig(duration_s=0.05, realtime=True, queue_size=1, drop="oldest")
    try:
        rep = run_workers(fast, str(tiny_onnx), "onnx", workers=2, target=1, threshold=0.5, run=run)
    finally:
        fast.close()
    assert rep["worker_errors"] == {}
    assert all(r["dropped_frames"] > 0 for r in rep["per_worker"])
    assert rep["dropped_frames"] == sum(r["dropped_frames"] for r in rep["per_worker"])
    assert rep["frames"] == rep["frames_processed"] + rep["dropped_frames"]


def test_a_killed_worker_is_reported_and_nothing_waits_for_it(pool: LanePool, tiny_onnx: Path) -> None:
    run = RunConfig(duration_s=1.0, realtime=True)
    t0 = time.monotonic()
    rep = run_workers(pool, str(tiny_onnx), "onnx", workers=2, target=1, threshold=0.5, run=run,
                      on_start=lambda pids: os.kill(pids[1], signal.SIGKILL))
    assert time.monotonic() - t0 < 60
    assert "worker 1 died" in rep["worker_errors"][1] and "-9" in rep["worker_errors"][1]
    assert [r["worker"] for r in rep["per_worker"]] == [0] and rep["decisions"] > 0
    assert {e[1] for e in rep["events"]} == {0} and len(rep["events"]) == rep["decisions"]  # lane 0 all there


def test_the_command_writes_the_merged_log_of_every_worker(tiny_onnx: Path, tmp_path: Path) -> None:
    import json

    from lymphosort.realtime.session import RealtimeConfig, run_realtime

    events = tmp_path / "log" / "events.jsonl"
    cfg = RealtimeConfig(model=str(tiny_onnx), workers=2, paced=False, max_frames=40, drop="block",
                         events=str(events), sim=replace(SIM, pool_frames=40))
    rep = run_realtime(cfg)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(lines) == rep["decisions"] > 0 and {d["lane"] for d in lines} == {0, 1}
    assert [(d["frame"], d["lane"]) for d in lines] == sorted((d["frame"], d["lane"]) for d in lines)

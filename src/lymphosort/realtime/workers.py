"""Several decision workers fed by one camera: `run_workers` (`lymphosort realtime --workers N`).

The camera images `lanes` parallel channels (a LymphoSim flow per lane, stacked along y into
one frame). Its frames live once in shared memory (the pre-rendered pool stands in for the
camera's DMA ring: written once, read by every worker without copies or pickling); the
camera clock is one shared start time, frame i being due `i / fps` after it (perf_counter
is system-wide). Worker w owns lane w: it runs the one-stream path (`RealtimeRunner`:
buffer, detector, tracker, classifier, gate) on that lane's rows, so tracking stays exact and
a worker never waits for another. Back-pressure is each worker's own frame buffer: frames it
cannot take in time are dropped and counted in its report.

In a sorter each lane's triggers drive that lane's own actuator, so no worker waits on the
others' decisions. The decisions also come back as they are made, in batches (one message
every `FLUSH_S` of a worker's time, not one per decision), each with the worker's watermark
(every decision of an earlier frame has been sent); `OrderedMerge` releases a decision once
every live worker's watermark has passed its frame, so the merged log leaves in (frame, lane)
order while the run goes on (`on_events`), not only at its end. A worker that dies is
reported with its exit code and drops out of the watermark; the others finish, and nothing
waits for the dead one.
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import time
from dataclasses import dataclass, replace
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from lymphosort.realtime.sources import Frame, SimConfig, SimSource

__all__ = ["EVENT_FIELDS", "LanePool", "OrderedMerge", "WorkerPlan", "merge_reports", "run_workers"]

#: a decision as the workers send it back: a tuple in this order (no dict per event)
EVENT_FIELDS = ("frame", "lane", "cell_id", "cls", "prob", "sort", "reason", "x", "y", "t_arrival", "t_decision")

#: seconds after every worker is ready (model loaded) that the camera clock starts
START_SLACK_S = 0.2
#: seconds the workers get to start and load their model
READY_TIMEOUT_S = 120.0
#: seconds a finished run waits for a live worker's report before calling it stalled
REPORT_TIMEOUT_S = 30.0
#: a worker sends its decisions at most this often (s of its clock): ~100 a second per worker
#: keeps the pickling off the per-decision cost and the merged log ~10 ms behind the lanes
FLUSH_S = 0.01
#: a watermark past every frame: the worker has sent its last decision
END = float("inf")


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker runs: its lanes, the model, and the one-stream settings."""

    worker: int
    lane: int
    model: str
    backend: str
    threads: int
    target: int
    threshold: float
    run: Any  # runner.RunConfig (duration, buffer, drop policy, ...)
    shm_name: str
    pool_shape: tuple[int, int, int]  # frames, rows, columns of the whole camera frame
    lane_height: int
    fps: float
    cpu: int | None  # pin the worker to this core (None: leave it)


class LanePool:
    """`lanes` LymphoSim flows rendered once and stacked into one camera frame each, in shared
    memory; the truth of every lane stays here and goes to the worker that owns the lane."""

    def __init__(self, sim: SimConfig, lanes: int) -> None:
        if lanes < 1 or sim.pool_frames < 1:
            raise ValueError("a lane pool needs >= 1 lane and >= 1 pre-rendered frame")
        t = time.perf_counter()
        sources = [SimSource(replace(sim, seed=sim.seed + 1000 * k, max_frames=sim.pool_frames)) for k in range(lanes)]
        self.lanes, self.lane_height, self.fps = lanes, sim.height, sim.fps
        self.shape = (sim.pool_frames, lanes * sim.height, sim.width)
        self.shm = shared_memory.SharedMemory(create=True, size=int(np.prod(self.shape)))
        frames = np.ndarray(self.shape, np.uint8, buffer=self.shm.buf)
        self.truth: list[list[Any]] = []
        for k, src in enumerate(sources):
            lane_truth = []
            for f in src:
                frames[f.index, k * sim.height:(k + 1) * sim.height] = f.image
                lane_truth.append(f.truth)
            self.truth.append(lane_truth)
        self.render_s = time.perf_counter() - t
        self.flow_px_per_frame = sim.flow_px_per_frame

    def close(self) -> None:
        self.shm.close()
        self.shm.unlink()


class _LaneSource:
    """One lane of the shared camera frames, replayed from the pool as `SimSource` does."""

    def __init__(self, frames: np.ndarray, lane: int, height: int, truth: Sequence[Any], fps: float,
                 flow_px_per_frame: float) -> None:
        self._frames, self._truth = frames, truth
        self._rows = slice(lane * height, (lane + 1) * height)
        self.fps, self.flow_px_per_frame = fps, flow_px_per_frame

    def __iter__(self) -> Iterator[Frame]:
        n, k = len(self._frames), 0
        while True:
            yield Frame(k, k / self.fps, self._frames[k % n, self._rows], self._truth[k % n], k // n)
            k += 1


def _worker(plan: WorkerPlan, truth: Sequence[Any], flow_px: float, t_start: Any, out: Any) -> None:
    """A worker process: loads its model, says it is ready, waits for the camera clock to start,
    runs the one-stream path on its lane and sends back its decisions and report."""
    import os

    if plan.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {plan.cpu})
    from lymphosort.realtime.backends import load_backend
    from lymphosort.realtime.gate import Gate, TriggerEvent
    from lymphosort.realtime.runner import RealtimeRunner

    shm = shared_memory.SharedMemory(name=plan.shm_name)
    try:
        frames = np.ndarray(plan.pool_shape, np.uint8, buffer=shm.buf)
        backend = load_backend(plan.backend, Path(plan.model), threads=plan.threads)
        lane = plan.lane

        class _Send:  # the decisions go back in batches, each with the worker's watermark
            def __init__(self) -> None:
                self.batch: list[tuple[Any, ...]] = []
                self.sent_at = 0.0

            def emit(self, e: TriggerEvent) -> None:
                self.batch.append(tuple(lane if k == "lane" else getattr(e, k) for k in EVENT_FIELDS))
                if e.t_decision - self.sent_at >= FLUSH_S:
                    # frames run in order, but this frame may still decide another cell
                    self.flush(e.frame - 1)
                    self.sent_at = e.t_decision

            def flush(self, watermark: float) -> None:
                out.send(("events", plan.worker, (watermark, self.batch)))
                self.batch = []

            def close(self) -> None:
                pass

        src = _LaneSource(frames, lane, plan.lane_height, truth, plan.fps, flow_px)
        sink = _Send()
        runner = RealtimeRunner(src, backend, Gate(plan.target, plan.threshold), sink, plan.run)
        out.send(("ready", plan.worker, None))
        while t_start.value == 0.0:  # the parent writes the camera's start time once all are ready
            time.sleep(0.001)
        rep = runner.run(t_start=t_start.value)
        rep.update(worker=plan.worker, lane=lane, pid=os.getpid())
        sink.flush(END)
        out.send(("report", plan.worker, rep))
    except BaseException as exc:  # noqa: BLE001 - the parent reports any failure of a worker
        out.send(("error", plan.worker, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        del frames
        shm.close()


class _Messages:
    """The workers' pipes read as one stream of (kind, worker, payload); a closed pipe is dropped."""

    def __init__(self, pipes: list[Any]) -> None:
        self._open, self._pending = list(pipes), []

    def get(self, timeout: float) -> tuple[str, int, Any] | None:
        from multiprocessing.connection import wait

        if not self._pending and not self._open:
            time.sleep(timeout)
            return None
        while not self._pending and self._open:
            ready = wait(self._open, timeout)
            if not ready:
                return None
            for conn in ready:
                try:
                    self._pending.append(conn.recv())
                except EOFError:  # the worker exited (or died): nothing more will come
                    self._open.remove(conn)
        return self._pending.pop(0) if self._pending else None


def _start(pool: LanePool, plans: list[WorkerPlan], ctx: Any) -> tuple[list[Any], _Messages, Any]:
    """Spawn one process per plan. No lock is shared between workers (a worker killed while
    holding one must not stall the others): each has its own pipe back, and the camera's
    start time is one lock-free value the parent writes once."""
    t_shared = ctx.RawValue("d", 0.0)
    procs, pipes = [], []
    for p in plans:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(p, pool.truth[p.lane], pool.flow_px_per_frame, t_shared, send),
                           daemon=True)
        proc.start()
        send.close()  # the worker holds the only write end: its death ends the pipe
        procs.append(proc)
        pipes.append(recv)
    return procs, _Messages(pipes), t_shared


def _wait_ready(messages: _Messages, procs: list[Any], errors: dict[int, str]) -> None:
    """Until every worker has loaded its model (or died, or timed out)."""
    ready: set[int] = set()
    load_by = time.monotonic() + READY_TIMEOUT_S
    while len(ready) + len(errors) < len(procs) and time.monotonic() < load_by:
        got = messages.get(0.2)
        if got is None:
            errors.update({w: f"worker {w} died (exit code {proc.exitcode}) while loading"
                           for w, proc in enumerate(procs) if not proc.is_alive() and w not in ready})
            continue
        kind, w, payload = got
        if kind == "ready":
            ready.add(w)
        elif kind == "error":
            errors[w] = payload
    errors.update({w: f"worker {w} was not ready within {READY_TIMEOUT_S:g} s" for w in range(len(procs))
                   if w not in ready and w not in errors})


class OrderedMerge:
    """The workers' decision batches as one log in (frame, lane, decision time) order, released
    as soon as it is final: a decision of frame f leaves once every worker still counted has a
    watermark >= f (all its decisions of frames <= watermark have arrived). A worker that ends,
    dies or stalls is `retire`d: it holds nothing back any more."""

    _AT = tuple(EVENT_FIELDS.index(k) for k in ("frame", "lane", "t_decision"))

    def __init__(self, workers: int, on_events: Callable[[list[tuple[Any, ...]]], None] | None = None) -> None:
        self._mark = {w: -1.0 for w in range(workers)}
        self._heap: list[tuple[tuple[Any, ...], int, tuple[Any, ...]]] = []
        self._n = 0  # tie-breaker: heap entries never compare their events
        self._on = on_events
        self.released: list[tuple[Any, ...]] = []

    def _key(self, e: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(e[i] for i in self._AT)

    def add(self, worker: int, watermark: float, batch: list[tuple[Any, ...]]) -> None:
        for e in batch:
            heapq.heappush(self._heap, (self._key(e), self._n, e))
            self._n += 1
        self._mark[worker] = max(self._mark.get(worker, -1.0), watermark)
        self._release()

    def retire(self, worker: int) -> None:
        self._mark[worker] = END
        self._release()

    def _release(self) -> None:
        upto = min(self._mark.values(), default=END)
        out = []
        while self._heap and self._heap[0][0][0] <= upto:
            out.append(heapq.heappop(self._heap)[2])
        if out:
            self.released.extend(out)
            if self._on is not None:
                self._on(out)


def _collect(messages: _Messages, procs: list[Any], end_by: float, errors: dict[int, str], merge: OrderedMerge
             ) -> dict[int, list[dict[str, Any]]]:
    """Reports until every worker reported, died, or stayed silent past `end_by` (perf_counter
    s): a stalled worker is reported, not awaited. Decision batches go to `merge` on arrival."""
    reports: dict[int, list[dict[str, Any]]] = {w: [] for w in range(len(procs))}
    deadline = None
    while any(not reports[w] for w in reports if w not in errors):
        if time.perf_counter() > end_by:
            errors.update({w: f"worker {w} sent no report within {REPORT_TIMEOUT_S:g} s of the run's end (stalled)"
                           for w in reports if not reports[w] and w not in errors})
            break
        got = messages.get(0.2)
        if got is None:
            for w, proc in enumerate(procs):
                if not proc.is_alive() and not reports[w] and w not in errors:
                    errors[w] = f"worker {w} died (exit code {proc.exitcode}) before its report"
                    merge.retire(w)  # the others' decisions no longer wait for its frames
            if deadline is None and all(not p.is_alive() for p in procs):
                deadline = time.monotonic() + 1.0  # drain what they sent before dying
            if deadline is not None and time.monotonic() > deadline:
                break
            continue
        kind, w, payload = got
        if kind == "events":
            merge.add(w, *payload)
        elif kind == "report":
            reports[w].append(payload)
        elif kind == "error":
            errors[w] = payload
            merge.retire(w)
    for w in reports:  # whatever arrived is final now
        merge.retire(w)
    return reports


def run_workers(pool: LanePool, model: str, backend: str, *, workers: int, target: int, threshold: float,
                run: Any, threads: int = 1, pin: bool = True,
                on_start: Callable[[list[int]], None] | None = None,
                on_events: Callable[[list[tuple[Any, ...]]], None] | None = None) -> dict[str, Any]:
    """Decide the lanes of `pool` with one worker process per lane; return the merged report
    with each worker's own and the decisions in (frame, lane) order. `on_events` gets the
    ordered decisions (tuples in `EVENT_FIELDS` order) during the run, as they become final."""
    import os

    if workers < 1 or workers != pool.lanes:
        raise ValueError(f"one worker per lane: workers must equal the pool's {pool.lanes} lanes, got {workers}")
    ctx = mp.get_context("spawn")  # no fork after torch/ONNX Runtime started their threads
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    plans = [WorkerPlan(w, w, model, backend, threads, target, threshold, run,
                        pool.shm.name, pool.shape, pool.lane_height, pool.fps,
                        cpus[w % len(cpus)] if pin and cpus else None) for w in range(workers)]
    procs, messages, t_shared = _start(pool, plans, ctx)
    errors: dict[int, str] = {}
    _wait_ready(messages, procs, errors)  # models load, then one camera clock for all
    t_start = time.perf_counter() + START_SLACK_S
    t_shared.value = t_start
    if on_start is not None:
        on_start([p.pid for p in procs])
    span = run.duration_s if run.duration_s is not None else (run.max_frames or 0) / pool.fps
    merge = OrderedMerge(workers, on_events)
    reports = _collect(messages, procs, t_start + span + REPORT_TIMEOUT_S, errors, merge)
    for proc in procs:
        proc.join(timeout=REPORT_TIMEOUT_S)
        if proc.is_alive():
            proc.kill()
    events = merge.released
    merged = merge_reports([r for w in sorted(reports) for r in reports[w]])
    merged.update(workers=workers, lanes=pool.lanes, render_s=pool.render_s, worker_errors=errors,
                  per_worker=[{k: v for k, v in r.items() if k not in ("latency_sparse", "latency_histogram",
                                                                       "purity_yield_curve", "eval_counts")}
                              for w in sorted(reports) for r in reports[w]])
    merged["decisions_in_order"] = len(events)
    merged["events"] = events
    return merged


def merge_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report of several streams run side by side: counts summed, rates over the longest
    wall time, latency percentiles from the merged histograms, scores from summed counts."""
    from lymphosort.realtime.report import LatencyHistogram, count_metrics

    if not reports:
        return {"decisions": 0, "cells_per_s": None}
    sums = {k: sum(int(r.get(k) or 0) for r in reports)
            for k in ("frames", "frames_processed", "dropped_frames", "decisions", "sorted", "classified",
                      "late_decisions")}
    wall = max(float(r["wall_s"]) for r in reports)
    lat = LatencyHistogram.merged([r["latency_sparse"] for r in reports])
    out: dict[str, Any] = {**sums, "wall_s": wall, "cells_per_s": sums["decisions"] / wall if wall > 0 else None,
                           "p50_latency_us": lat.percentile(50), "p99_latency_us": lat.percentile(99),
                           "max_latency_us": lat.max_seen if lat.n else None,
                           "dropped_frame_share": sums["dropped_frames"] / sums["frames"] if sums["frames"] else None,
                           "latency_histogram": lat.compact()}
    counts = [r["eval_counts"] for r in reports if r.get("eval_counts")]
    if counts:
        total = {k: sum(int(c[k]) for c in counts) for k in counts[0]}
        out.update(count_metrics(total))
    return out

"""The real-time loop, on one thread: the camera fills a bounded frame buffer at the frame
clock; the decision loop takes the oldest buffered frame and detects, tracks, crops,
classifies, gates and emits one trigger per cell.

The camera. A sorter's camera writes frames into a ring buffer by DMA at its own clock,
whatever the CPU is doing; the decision thread polls that buffer. That is modelled
exactly, without a second thread: before taking a frame, the loop delivers every source
frame whose time has come (frame i of a sequence is due `t_s - t_s(first)` after the
start) into the buffer, and sleeps until the next one is due when it has nothing to do.
A producer thread in Python would instead cost ~35 us of CPU and two context switches per
frame on the same core (a GIL handoff each time), which the camera's DMA does not. The
source is still read on this core (a pre-rendered pool costs nothing; decoding a video
would), and the truth bookkeeping of the benchmark is done here too.

Back-pressure: the buffer holds at most `queue_size` frames. When a frame is due and the
buffer is full, one frame is dropped and counted: `drop="oldest"` (default) discards the
oldest buffered frame, because in a sorter a stale frame's cells have already passed the
sort point and only the newest frames can still lead to a useful trigger; `"newest"`
discards the incoming frame (keeps a contiguous stretch); `"block"` holds the incoming
frame back until there is room (lossless offline replay, not a camera; its latency still
counts from when it was due). Delivering all due frames at once before each decision
leaves the buffer exactly as a camera delivering them one by one would have. As fast as
possible (`realtime=False`), a frame arrives when the buffer has room (none is dropped).
Memory is bounded by the buffer, the tracker's live tracks and the fixed-size measurement
structures.

Latency of a cell = decision time - frame arrival time. In real-time mode a frame
"arrives" when the camera would have delivered it (its scheduled time), so a late
wake-up, a full buffer or a slow decision all show up in the latency.

Scoring against ground truth (the benchmark's bookkeeping, not the sorter's) is done in
short steps while the loop is idle. Python's cyclic garbage collector is off during a run:
the loop makes no reference cycles (a run leaves a handful of cyclic objects, whatever its
length; test), while the collections themselves landed on frames: ~1 ms every few hundred
ms for the young objects of the ground-truth ledger, ~100 ms for a full one over the model
and a pre-rendered pool.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Literal

from lymphosort.errors import ConfigError
from lymphosort.realtime.backends import Backend
from lymphosort.realtime.crop import CROP_SIZE, crop_cells
from lymphosort.realtime.detect import Detector, DetectorConfig
from lymphosort.realtime.gate import Gate, TriggerEvent, TriggerSink
from lymphosort.realtime.report import Evaluator, LatencyHistogram, TruthLedger
from lymphosort.realtime.sources import Frame, FrameSource
from lymphosort.realtime.track import Tracker, TrackerConfig

__all__ = ["FrameQueue", "RunConfig", "RealtimeRunner", "task_label_map"]

DropPolicy = Literal["oldest", "newest", "block"]


@dataclass(frozen=True)
class RunConfig:
    duration_s: float | None = None  # source seconds (real-time) or wall seconds (as fast as possible)
    max_frames: int | None = None
    realtime: bool = True  # pace the source at its fps; False: as fast as the queue takes them
    queue_size: int = 4  # frames the camera buffers: ~deadline x fps (older frames are useless)
    drop: DropPolicy = "oldest"
    deadline_us: float = 1000.0  # a decision later than this counts as late (reported)
    spin_s: float = 2e-4  # wait for a due frame by polling the clock for at most this long (0: sleep)
    crop_size: int = CROP_SIZE
    switch_interval_s: float = 5e-5  # GIL switch interval while running (a live view thread yields quickly)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ConfigError("queue_size must be >= 1")
        if self.drop not in ("oldest", "newest", "block"):
            raise ConfigError(f"drop must be 'oldest', 'newest' or 'block', not {self.drop!r}")


class FrameQueue:
    """A bounded FIFO with a drop policy; counts what it drops and its deepest fill."""

    def __init__(self, maxsize: int, drop: DropPolicy = "oldest") -> None:
        self.maxsize, self.drop = int(maxsize), drop
        self._q: deque[Any] = deque()
        self._cv = threading.Condition()
        self.dropped = 0
        self.max_depth = 0
        self.closed = False

    def put(self, item: Any, stop: threading.Event | None = None) -> bool:
        """Enqueue; False when the item itself was dropped (policy 'newest')."""
        with self._cv:
            if len(self._q) >= self.maxsize:
                if self.drop == "block":
                    while len(self._q) >= self.maxsize and not (stop is not None and stop.is_set()):
                        self._cv.wait(0.05)
                elif self.drop == "oldest":
                    self._q.popleft()
                    self.dropped += 1
                else:
                    self.dropped += 1
                    return False
            self._q.append(item)
            self.max_depth = max(self.max_depth, len(self._q))
            self._cv.notify_all()
            return True

    def get_nowait(self) -> Any | None:
        """The oldest item, or None when empty."""
        with self._cv:
            if not self._q:
                return None
            item = self._q.popleft()
            self._cv.notify_all()
            return item

    def get(self, timeout: float = 0.1) -> Any | None:
        """The oldest item; None when the queue stays empty for `timeout` or is closed and empty."""
        with self._cv:
            if not self._q:
                if self.closed:
                    return None
                self._cv.wait(timeout)
                if not self._q:
                    return None
            item = self._q.popleft()
            self._cv.notify_all()
            return item

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    def __len__(self) -> int:
        return len(self._q)


def task_label_map(card: dict[str, Any]) -> dict[int, int] | None:
    """On-disk class (B=0, T4=1, T8=2) -> the model's task label, from the card's task."""
    from lymphosort.data.info import TASKS

    task = card.get("task")
    if task in TASKS:
        return dict(TASKS[task].label_map)
    if len(card.get("classes") or []) == 3:
        return {0: 0, 1: 1, 2: 2}
    return None


class RealtimeRunner:
    """One stream: `run()` returns the report dict (see `report.py` for the definitions)."""

    def __init__(self, source: FrameSource, backend: Backend, gate: Gate, sink: TriggerSink | None = None,
                 config: RunConfig = RunConfig(), label_map: dict[int, int] | None = None) -> None:
        self.source, self.backend, self.gate, self.sink, self.config = source, backend, gate, sink, config
        self.label_map = label_map if label_map is not None else task_label_map(backend.card)
        self.queue = FrameQueue(config.queue_size, config.drop)
        self.detector = Detector(config.detector)
        tcfg = config.tracker
        if tcfg.flow_px_per_frame is None and getattr(source, "flow_px_per_frame", None):
            tcfg = TrackerConfig(**{**asdict(tcfg), "flow_px_per_frame": float(source.flow_px_per_frame)})
        self.tracker = Tracker(tcfg)
        self.latency = LatencyHistogram()
        self.stats: dict[str, Any] = dict.fromkeys(
            ("frames", "frames_processed", "decisions", "sorted", "late_decisions", "classified"), 0)
        self.stage_s = {"detect": 0.0, "track": 0.0, "classify": 0.0, "emit": 0.0}
        self.ledger: TruthLedger | None = None
        self.evaluator: Evaluator | None = None
        self._t_start = 0.0
        self.consumer_cpu_s = 0.0
        self.spin_s = 0.0  # of which spent polling the clock for a due frame

    # --- the camera --------------------------------------------------------------------
    def _frames(self) -> Iterator[tuple[Frame, float | None]]:
        """Source frames with their due time (perf_counter s; None: as soon as there is room),
        up to the run's frame or time limit."""
        cfg = self.config
        fps = self.source.fps if cfg.realtime else None
        first_t: float | None = None
        for frame in self.source:
            if cfg.max_frames is not None and self.stats["frames"] >= cfg.max_frames:
                return
            if first_t is None:
                first_t = frame.t_s
            rel = frame.t_s - first_t
            if fps:
                if cfg.duration_s is not None and rel >= cfg.duration_s:
                    return
                yield frame, self._t_start + rel
            else:
                if cfg.duration_s is not None and time.perf_counter() - self._t_start >= cfg.duration_s:
                    return
                yield frame, None

    def _arrive(self, frame: Frame, t_arr: float) -> None:
        if frame.truth is not None:
            self._observe_truth(frame)
        self.stats["frames"] += 1
        self.queue.put((frame, t_arr))

    def _observe_truth(self, frame: Frame) -> None:
        if self.ledger is None:
            w = frame.image.shape[1]
            trig = self.tracker.config.trigger_x if self.tracker.config.trigger_x is not None else 0.4 * w
            self.ledger = TruthLedger(trig)
            self.evaluator = Evaluator(self.ledger, self.label_map, self.gate.target)
        self.ledger.observe(frame.index, frame.sequence, frame.truth or [])

    def _idle(self, until: float) -> None:
        """Nothing buffered until `until`: score a step of a finished sequence if there is
        time for it (~20 us), else wait: sleep, then poll the clock for the last `spin_s`
        (a sleep on a VM wakes up ~70 us late, and the caches go cold)."""
        pc = time.perf_counter
        t = pc()
        wait = until - t
        if wait > 5e-5 and self.evaluator is not None and self.evaluator.work(1):
            return
        if wait > self.config.spin_s:
            time.sleep(wait - self.config.spin_s)
        t1 = pc()
        while pc() < until:
            pass
        self.spin_s += pc() - t1

    # --- decisions ----------------------------------------------------------------------
    def _process(self, frame: Frame, t_arr: float) -> None:
        pc = time.perf_counter
        img = frame.image
        h, w = img.shape
        t = pc()
        dets = self.detector.detect(img)
        t1 = pc()
        decides = self.tracker.update(frame.index, dets, w, h)
        t2 = pc()
        stage, stats = self.stage_s, self.stats
        stage["detect"] += t1 - t
        stage["track"] += t2 - t1
        if not decides:
            return
        todo = [d for d in decides if d.reject != "doublet"]  # doublets are rejected unclassified
        rows: list[list[float]] = []
        if todo:
            crops = crop_cells(img, [(d.det.x, d.det.y) for d in todo], self.config.crop_size)
            rows = self.backend.predict_proba(crops).tolist()  # Python floats: numpy scalars cost ~1 us each
            stats["classified"] += len(todo)
        t_dec = pc()
        stage["classify"] += t_dec - t2
        classes, target, gate, sink, ev = self.backend.classes, self.gate.target, self.gate, self.sink, self.evaluator
        lat = (t_dec - t_arr) * 1e6
        k = 0
        for d in decides:
            if d.reject == "doublet":
                pred, p = -1, 0.0
            else:
                row = rows[k]
                k += 1
                pred, p = row.index(max(row)), row[target]  # first maximum, as argmax
            sort, reason = gate.decide(p, d.reject)
            self.latency.add(lat)
            stats["decisions"] += 1
            stats["sorted"] += sort
            stats["late_decisions"] += lat > self.config.deadline_us
            if sink is not None:
                sink.emit(TriggerEvent(d.track.track_id, frame.index, frame.t_s, t_arr, t_dec,
                                       classes[pred] if pred >= 0 else "", p, sort, d.det.x, d.det.y, reason))
            if ev is not None:
                ev.record(frame.sequence, frame.truth, d.det.x, d.det.y, d.det.box, pred, p, sort, d.reject is None)
        stage["emit"] += pc() - t_dec

    def run(self, t_start: float | None = None) -> dict[str, Any]:
        """Run to the end of the source or the limits; `t_start` (perf_counter s, default now) is
        when frame 0 is due: workers of one camera share it (perf_counter is system-wide)."""
        cfg, q = self.config, self.queue
        old_switch = sys.getswitchinterval()
        sys.setswitchinterval(cfg.switch_interval_s)
        gc_was_enabled = gc.isenabled()
        gc.disable()
        if t_start is not None and t_start > time.perf_counter():
            time.sleep(t_start - time.perf_counter())  # start with the other workers of the camera
        self._t_start = time.perf_counter() if t_start is None else t_start
        cpu0 = time.thread_time()
        frames = self._frames()
        nxt: tuple[Frame, float | None] | None = None
        ended = False
        seq = None
        try:
            while True:
                # the camera: deliver every frame that is due (as fast as possible: while there is room)
                now = time.perf_counter()
                while not ended:
                    if nxt is None:
                        nxt = next(frames, None)
                        if nxt is None:
                            ended = True
                            break
                    frame, due = nxt
                    if (due is None or q.drop == "block") and len(q) >= q.maxsize:
                        break
                    if due is None:
                        due = time.perf_counter()
                    elif due > now:
                        break
                    self._arrive(frame, due)
                    nxt = None
                item = q.get_nowait()
                if item is None:
                    if ended:
                        break
                    assert nxt is not None and nxt[1] is not None
                    self._idle(nxt[1])
                    continue
                frame, t_arr = item
                if frame.sequence != seq:
                    if seq is not None:
                        self.tracker.reset()
                        if self.evaluator is not None:
                            self.evaluator.finish(up_to=frame.sequence, defer=True)
                    seq = frame.sequence
                self._process(frame, t_arr)
                self.stats["frames_processed"] += 1
        except KeyboardInterrupt:
            pass
        finally:
            if gc_was_enabled:
                gc.enable()
            sys.setswitchinterval(old_switch)
            if self.sink is not None:
                self.sink.close()
        self.consumer_cpu_s = time.thread_time() - cpu0 - self.spin_s
        wall = time.perf_counter() - self._t_start
        return self.report(wall)

    def snapshot(self) -> dict[str, Any]:
        """Live numbers for the terminal view (read without locking: approximate by design)."""
        el = max(1e-9, time.perf_counter() - self._t_start) if self._t_start else 1e-9
        s = self.stats
        return {"elapsed_s": el, "frames/s": s["frames_processed"] / el, "cells/s": s["decisions"] / el,
                "decisions": s["decisions"], "sorted": s["sorted"], "dropped_frames": self.queue.dropped,
                "queue": len(self.queue), "p50_latency_us": self.latency.percentile(50) or 0.0,
                "p99_latency_us": self.latency.percentile(99) or 0.0, "late_decisions": s["late_decisions"]}

    def report(self, wall_s: float) -> dict[str, Any]:
        s, n = self.stats, max(1, self.stats["frames_processed"])
        rep: dict[str, Any] = {
            "frames": s["frames"],
            "frames_processed": s["frames_processed"],
            "dropped_frames": self.queue.dropped,
            "max_queue_depth": self.queue.max_depth,
            "queue_size": self.queue.maxsize,
            "drop_policy": self.queue.drop,
            "cells_seen": self.tracker._next_id,
            "decisions": s["decisions"],
            "sorted": s["sorted"],
            "classified": s["classified"],
            "wall_s": wall_s,
            "cells_per_s": s["decisions"] / wall_s if wall_s > 0 else None,
            "frames_per_s": s["frames_processed"] / wall_s if wall_s > 0 else None,
            "p50_latency_us": self.latency.percentile(50),
            "p99_latency_us": self.latency.percentile(99),
            "max_latency_us": self.latency.max_seen if self.latency.n else None,
            "deadline_us": self.config.deadline_us,
            "late_decisions": s["late_decisions"],
            "latency_histogram": self.latency.compact(),  # 10-us bins up to 10 ms + overflow count
            "latency_sparse": self.latency.sparse(),  # exact 1-us bins, for merging workers' reports
            "stage_us_per_frame": {k: v / n * 1e6 for k, v in self.stage_s.items()},
            # CPU time the decision thread actually got, less its polling for due frames: on a
            # shared machine the wall-clock numbers above include time stolen by other
            # processes; these do not
            "consumer_cpu_s": self.consumer_cpu_s,
            "spin_s": self.spin_s,
            "consumer_cpu_us_per_frame": self.consumer_cpu_s / n * 1e6,
            "cells_per_cpu_s": s["decisions"] / self.consumer_cpu_s if self.consumer_cpu_s > 0 else None,
            "classify_us_per_cell": self.stage_s["classify"] / s["classified"] * 1e6 if s["classified"] else None,
            "backend": self.backend.name,
            "classes": list(self.backend.classes),
            "target_class": self.backend.classes[self.gate.target],
            "threshold": self.gate.threshold,
            "realtime": self.config.realtime,
            "source_fps": self.source.fps,
            "noise_sigma": self.detector.noise_sigma,
        }
        if self.evaluator is not None:
            self.evaluator.finish()
            rep.update(self.evaluator.metrics())
        else:
            rep.update({k: None for k in ("detection_precision", "detection_recall", "accuracy", "purity", "yield")})
        return rep

"""The real-time loop: a producer thread paces the source into a bounded queue; the
consumer detects, tracks, crops, classifies, gates and emits one trigger per cell.

Back-pressure: the queue holds at most `queue_size` frames. When it is full the producer
drops a frame and counts it: `drop="oldest"` (default) discards the oldest queued frame,
because in a sorter a stale frame's cells have already passed the sort point and only the
newest frames can still lead to a useful trigger; `"newest"` discards the incoming frame
(keeps a contiguous stretch); `"block"` makes the producer wait (lossless offline replay,
not a camera). Memory is bounded by the queue, the tracker's live tracks and the
fixed-size measurement structures.

Latency of a cell = decision time - frame arrival time. In real-time mode a frame
"arrives" when the camera would have delivered it (its scheduled time), so a late
producer, a full queue or a slow consumer all show up in the latency. Python's GIL switch
interval is lowered while running (restored afterwards) so the producer is not held off
for the default 5 ms by the consumer.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

import numpy as np

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
    queue_size: int = 4  # frames between producer and consumer: ~deadline x fps (older frames are useless)
    drop: DropPolicy = "oldest"
    deadline_us: float = 1000.0  # a decision later than this counts as late (reported)
    crop_size: int = CROP_SIZE
    switch_interval_s: float = 5e-5  # GIL switch interval while running
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
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.stats: dict[str, Any] = dict.fromkeys(
            ("frames", "frames_processed", "decisions", "sorted", "late_decisions", "classified"), 0)
        self.stage_s = {"detect": 0.0, "track": 0.0, "classify": 0.0, "emit": 0.0}
        self.ledger: TruthLedger | None = None
        self.evaluator: Evaluator | None = None
        self.error: BaseException | None = None
        self._t_start = 0.0
        self.consumer_cpu_s = 0.0

    # --- producer -------------------------------------------------------------------
    def _produce(self) -> None:
        cfg = self.config
        fps = self.source.fps if cfg.realtime else None
        t0 = time.perf_counter()
        first_t: float | None = None
        try:
            for frame in self.source:
                if self._stop.is_set():
                    break
                if first_t is None:
                    first_t = frame.t_s
                rel = frame.t_s - first_t
                if cfg.max_frames is not None and self.stats["frames"] >= cfg.max_frames:
                    break
                if fps:
                    if cfg.duration_s is not None and rel >= cfg.duration_s:
                        break
                    due = t0 + rel
                    wait = due - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    t_arr = due  # when the camera would have delivered it
                else:
                    if cfg.duration_s is not None and time.perf_counter() - t0 >= cfg.duration_s:
                        break
                    t_arr = time.perf_counter()
                if frame.truth is not None:
                    self._observe_truth(frame)
                self.stats["frames"] += 1
                self.queue.put((frame, t_arr), self._stop)
        except BaseException as exc:  # surfaced by run(); the consumer must not wait forever
            self.error = exc
        finally:
            self.queue.close()

    def _observe_truth(self, frame: Frame) -> None:
        if self.ledger is None:
            w = frame.image.shape[1]
            trig = self.tracker.config.trigger_x if self.tracker.config.trigger_x is not None else 0.4 * w
            self.ledger = TruthLedger(trig)
            self.evaluator = Evaluator(self.ledger, self.label_map, self.gate.target)
        self.ledger.observe(frame.index, frame.sequence, frame.truth or [])

    # --- consumer -------------------------------------------------------------------
    def _process(self, frame: Frame, t_arr: float, pc: Callable[[], float] = time.perf_counter) -> None:
        img = frame.image
        h, w = img.shape
        t = pc()
        dets = self.detector.detect(img)
        t1 = pc()
        decides = self.tracker.update(frame.index, dets, w, h)
        t2 = pc()
        self.stage_s["detect"] += t1 - t
        self.stage_s["track"] += t2 - t1
        if not decides:
            return
        todo = [d for d in decides if d.reject != "doublet"]  # doublets are rejected unclassified
        probs = None
        if todo:
            crops = crop_cells(img, [(d.det.x, d.det.y) for d in todo], self.config.crop_size)
            probs = self.backend.predict_proba(crops)
            self.stats["classified"] += len(todo)
        t_dec = pc()
        self.stage_s["classify"] += t_dec - t2
        classes, target = self.backend.classes, self.gate.target
        k = 0
        for d in decides:
            if d.reject == "doublet":
                pred, p = -1, 0.0
            else:
                row = probs[k]  # type: ignore[index]
                k += 1
                pred, p = int(row.argmax()), float(row[target])
            sort, reason = self.gate.decide(p, d.reject)
            ev = TriggerEvent(d.track.track_id, frame.index, frame.t_s, t_arr, t_dec,
                              classes[pred] if pred >= 0 else "", p, sort, d.det.x, d.det.y, reason)
            lat = (t_dec - t_arr) * 1e6
            self.latency.add(lat)
            self.stats["decisions"] += 1
            self.stats["sorted"] += int(sort)
            self.stats["late_decisions"] += int(lat > self.config.deadline_us)
            if self.sink is not None:
                self.sink.emit(ev)
            if self.evaluator is not None:
                self.evaluator.record(frame.sequence, frame.truth, d.det.x, d.det.y, d.det.box, pred, p, sort,
                                      d.reject is None)
        self.stage_s["emit"] += pc() - t_dec

    def run(self) -> dict[str, Any]:
        old_switch = sys.getswitchinterval()
        sys.setswitchinterval(self.config.switch_interval_s)
        producer = threading.Thread(target=self._produce, name="realtime-producer", daemon=True)
        self._t_start = time.perf_counter()
        cpu0 = time.thread_time()
        seq = None
        try:
            producer.start()
            while True:
                item = self.queue.get(0.1)
                if item is None:
                    if self.queue.closed and len(self.queue) == 0:
                        break
                    continue
                frame, t_arr = item
                if frame.sequence != seq:
                    if seq is not None:
                        self.tracker.reset()
                        if self.evaluator is not None:
                            self.evaluator.finish(up_to=frame.sequence)
                    seq = frame.sequence
                self._process(frame, t_arr)
                self.stats["frames_processed"] += 1
        except KeyboardInterrupt:
            pass
        finally:
            self._stop.set()
            producer.join(timeout=5.0)
            sys.setswitchinterval(old_switch)
            if self.sink is not None:
                self.sink.close()
        self.consumer_cpu_s = time.thread_time() - cpu0
        if self.error is not None:
            raise self.error
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
            "stage_us_per_frame": {k: v / n * 1e6 for k, v in self.stage_s.items()},
            # CPU time the decision thread actually got: on a shared machine the wall-clock
            # numbers above include time stolen by other processes; these do not
            "consumer_cpu_s": self.consumer_cpu_s,
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

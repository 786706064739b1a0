"""Tracking along the flow so each cell gets exactly one decision.

Cells move along +x at a speed that depends on their height in the channel (Poiseuille
profile) and barely move in y. A track predicts its next x from its own speed (or, for a
track seen once, from the speed learnt for its y band); detections are assigned greedily
by |x - predicted x| + |y - y| inside a gate. Frame-index gaps (dropped frames) scale the
prediction, so a dropped frame does not break a track.

A track is decided once, in the first frame where the cell is fully in view and its centre
has reached the trigger line `trigger_x` (or earlier if it would leave the view before the
next frame). A track born past the point it could have reached unseen (trigger line plus
one frame of travel) is never decided: it is a fragment of a cell already decided, or a
cell that was in view before the stream started.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lymphosort.realtime.detect import Detection

__all__ = ["Decide", "Track", "Tracker", "TrackerConfig"]


@dataclass(frozen=True)
class TrackerConfig:
    """Units: px and frames of the full-resolution frame."""

    trigger_x: float | None = None  # None: 40% of the frame width
    flow_px_per_frame: float | None = None  # nominal speed; None: learnt from the tracks
    max_speed: float = 200.0  # px/frame: search window while no speed is known
    gate_y: float = 8.0  # px a cell may drift in y between observations
    gate_x: float = 8.0  # px of x error allowed for a track with its own speed
    gate_x_frac: float = 0.4  # x error allowed for a track seen once, as a fraction of the prior step
    max_missed: int = 2  # frames without a detection before a track is dropped
    isolation_gap: float = 6.0  # px between boxes: a closer neighbour makes the sort unsafe
    y_bands: int = 8  # speed prior bands across the frame height


@dataclass(slots=True)
class Track:
    track_id: int
    x: float
    y: float
    vx: float | None  # px/frame; None until seen twice
    last_index: int
    first_index: int
    n_obs: int = 1
    eligible: bool = True
    decided: bool = False
    det: Detection | None = None


@dataclass(frozen=True)
class Decide:
    """A cell to decide on now: its track, the detection in this frame, and why it must be
    rejected regardless of its class (None, 'doublet', 'neighbour')."""

    track: Track
    det: Detection
    reject: str | None


@dataclass
class Tracker:
    """Per frame this is plain Python over a handful of tracks and detections: the speed
    prior per y band lives in Python lists (numpy scalar arithmetic costs ~10x more)."""

    config: TrackerConfig = field(default_factory=TrackerConfig)
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 0
    _band_v: list[float] | None = None
    _band_n: list[float] | None = None
    _height: int = 0

    def reset(self) -> None:
        """Drop every track (a discontinuity in the stream); keep the learnt speeds."""
        self.tracks = []

    def _band(self, y: float) -> int:
        nb = self.config.y_bands
        return min(nb - 1, max(0, int(y * nb / self._height)))

    def _prior(self, y: float) -> float | None:
        if self._band_v is not None and self._height:
            b = self._band(y)
            if self._band_n[b] > 0:
                return self._band_v[b]
            n = np.array(self._band_n)
            learnt = n > 0
            if learnt.any():
                return float(np.average(np.array(self._band_v)[learnt], weights=n[learnt]))
        return self.config.flow_px_per_frame

    def _learn(self, y: float, v: float) -> None:
        b = self._band(y)
        n = min(self._band_n[b], 50.0)  # EMA over the last ~50 tracks of the band
        self._band_v[b] = (self._band_v[b] * n + v) / (n + 1)
        self._band_n[b] = n + 1

    # long by design: the per-frame hot path, one function with no call overhead per track and detection
    def update(self, index: int, dets: list[Detection], width: int, height: int) -> list[Decide]:
        """Associate this frame's detections (frame `index`) and return the cells to decide now."""
        cfg = self.config
        if self._band_v is None or height != self._height:
            self._height = height
            self._band_v = [0.0] * cfg.y_bands
            self._band_n = [0.0] * cfg.y_bands
        trigger = cfg.trigger_x if cfg.trigger_x is not None else 0.4 * width

        # candidate pairs inside the gates, then greedy assignment by cost
        pairs: list[tuple[float, int, int]] = []
        for ti, t in enumerate(self.tracks):
            dt = index - t.last_index
            v = t.vx if t.vx is not None else self._prior(t.y)
            gate_y = cfg.gate_y * max(1, dt) ** 0.5
            if v is None:  # no speed known yet: any forward step up to max_speed
                for di, d in enumerate(dets):
                    dy = abs(d.y - t.y)
                    step = d.x - t.x
                    if dy <= gate_y and 0 < step <= cfg.max_speed * dt:
                        pairs.append((dy + 0.1 * step, ti, di))
                continue
            x_pred = t.x + v * dt
            gate_x = cfg.gate_x + (cfg.gate_x_frac * v * dt if t.vx is None else 0.1 * v * dt)
            for di, d in enumerate(dets):
                dy = abs(d.y - t.y)
                if dy <= gate_y:
                    dx = abs(d.x - x_pred)
                    if dx <= gate_x:
                        pairs.append((dx + 2.0 * dy, ti, di))
        pairs.sort()
        used_t: set[int] = set()
        used_d: set[int] = set()
        matched: list[tuple[Track, Detection]] = []
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            t, d = self.tracks[ti], dets[di]
            dt = index - t.last_index
            v = (d.x - t.x) / dt
            t.vx = v if t.vx is None else 0.5 * t.vx + 0.5 * v
            if t.n_obs >= 1 and not d.partial and t.det is not None and not t.det.partial:
                self._learn(d.y, v)
            t.x, t.y, t.last_index, t.det = d.x, d.y, index, d
            t.n_obs += 1
            matched.append((t, d))

        for di, d in enumerate(dets):
            if di in used_d:
                continue
            v = self._prior(d.y)
            reach = trigger + (v if v is not None else cfg.max_speed)
            t = Track(self._next_id, d.x, d.y, None, index, index, eligible=d.x < reach, det=d)
            self._next_id += 1
            self.tracks.append(t)
            matched.append((t, d))

        out: list[Decide] = []
        for t, d in matched:
            if t.decided or not t.eligible or d.partial:
                continue
            v = t.vx if t.vx is not None else (self._prior(d.y) or 0.0)
            leaving = d.box[2] + v >= width  # would be clipped in the next frame: last chance
            if d.x >= trigger or leaving:
                t.decided = True
                reject = "doublet" if d.doublet else ("neighbour" if _crowded(d, dets, cfg.isolation_gap) else None)
                out.append(Decide(t, d, reject))

        # drop tracks that left the view or were not seen for too long
        keep = []
        for t in self.tracks:
            dt = index - t.last_index
            if dt > cfg.max_missed:
                continue
            v = t.vx if t.vx is not None else (self._prior(t.y) or 0.0)
            if t.x + v * dt - 0.5 * (t.det.box[2] - t.det.box[0] if t.det else 0) < width:
                keep.append(t)
        self.tracks = keep
        return out


def _crowded(d: Detection, dets: list[Detection], gap: float) -> bool:
    x0, y0, x1, y1 = d.box
    for o in dets:
        if o is d:
            continue
        a0, b0, a1, b1 = o.box
        if not (x0 - a1 > gap or a0 - x1 > gap or y0 - b1 > gap or b0 - y1 > gap):
            return True
    return False

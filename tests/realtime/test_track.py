from __future__ import annotations

from lymphosort.realtime.detect import Detection
from lymphosort.realtime.track import Tracker, TrackerConfig

W, H = 320, 96


def _det(x: float, y: float, half: float = 12.0, doublet: bool = False) -> Detection:
    box = (int(x - half), int(y - half), int(x + half) + 1, int(y + half) + 1)
    return Detection(x, y, (max(0, box[0]), box[1], min(W, box[2]), box[3]), 300.0,
                     box[0] <= 1 or box[2] >= W - 1, doublet)


def _stream(cells, n_frames, drop=()):
    """cells: list of (x0, y, v): positions per frame; returns decisions per cell id order."""
    tr = Tracker(TrackerConfig(flow_px_per_frame=40.0))
    decided = []
    for k in range(n_frames):
        if k in drop:
            continue
        dets = [_det(x0 + v * k, y) for x0, y, v in cells if -10 < x0 + v * k < W + 10]
        for d in tr.update(k, dets, W, H):
            decided.append((k, round(d.det.y), d.reject))
    return decided


def test_each_cell_decided_once_at_the_trigger_line() -> None:
    cells = [(-20, 30, 40.0), (-100, 60, 36.0), (-200, 45, 44.0)]
    dec = _stream(cells, 20)
    assert sorted(y for _, y, _ in dec) == [30, 45, 60]
    assert all(r is None for _, _, r in dec)


def test_dropped_frames_do_not_duplicate_or_lose_decisions() -> None:
    cells = [(-20, 30, 40.0), (-100, 60, 36.0), (-200, 45, 44.0)]
    dec = _stream(cells, 20, drop={3, 4, 9})
    assert sorted(y for _, y, _ in dec) == [30, 45, 60]


def test_close_neighbours_and_doublets_are_rejected() -> None:
    tr = Tracker(TrackerConfig(flow_px_per_frame=40.0))
    out = []
    for k in range(8):
        x = -20 + 40 * k
        dets = [_det(x, 30), _det(x + 4, 60)] + [_det(x - 60, 50, doublet=True)]
        out += tr.update(k, dets, W, H)
    reasons = sorted(str(d.reject) for d in out)
    assert reasons == ["doublet", "neighbour", "neighbour"]


def test_speed_prior_is_learnt_without_a_hint() -> None:
    tr = Tracker(TrackerConfig())  # no nominal speed: search forward, then learn
    n = 0
    for k in range(30):
        dets = [_det(x, 48) for x in (-15 + 30 * k - 150 * j for j in range(5)) if 0 < x < W]
        n += len(tr.update(k, dets, W, H))
    assert n == sum(1 for j in range(5) if -15 + 30 * 29 - 150 * j > 0.4 * W)
    assert tr._prior(48) is not None and abs(tr._prior(48) - 30) < 1


def test_reset_drops_tracks() -> None:
    tr = Tracker(TrackerConfig(flow_px_per_frame=40.0))
    tr.update(0, [_det(20, 30)], W, H)
    assert tr.tracks
    tr.reset()
    assert tr.tracks == []

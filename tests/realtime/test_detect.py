from __future__ import annotations

import numpy as np
import pytest

from lymphosort.realtime.detect import Detector, DetectorConfig, detect_still
from lymphosort.realtime.sources import load_grey
from tests.realtime.conftest import REFERENCE


def _match(dets, c, r=6.0):
    return [d for d in dets if abs(d.x - c.center[0]) <= r and abs(d.y - c.center[1]) <= r]


def test_stream_detection_finds_isolated_cells_and_nothing_else(flow_frames) -> None:
    det = Detector()
    tp = fn = fp = 0
    for f in flow_frames:
        dets = det.detect(f.image)
        for c in f.truth:
            if c.isolated and c.whole:
                if _match(dets, c):
                    tp += 1
                else:
                    fn += 1
        for d in dets:  # every detection lies on some cell (isolated or in a cluster)
            on_cell = any(c.box[0] - 2 <= d.x <= c.box[2] + 2 and c.box[1] - 2 <= d.y <= c.box[3] + 2 for c in f.truth)
            fp += int(not on_cell)
    assert tp > 100
    assert tp / (tp + fn) >= 0.99
    assert fp <= 0.01 * (tp + fp)


def test_empty_channel_gives_no_detections_walls_and_debris_cancel() -> None:
    from lymphosort.data.synth import render_flow

    frames = list(render_flow(30, seed=5, cell_rate=0.0))
    det = Detector()
    counts = [len(det.detect(f.image)) for f in frames]
    assert sum(counts) == 0
    assert np.isfinite(det.noise_sigma) and det.noise_sigma > 0


def test_isolated_cell_centre_is_accurate(flow_frames) -> None:
    det = Detector()
    errs = []
    for f in flow_frames:
        dets = det.detect(f.image)
        for c in f.truth:
            m = _match(dets, c)
            if c.isolated and c.whole and m:
                errs.append(np.hypot(m[0].x - c.center[0], m[0].y - c.center[1]))
                assert not m[0].doublet and not m[0].partial
    assert np.median(errs) < 1.5


def test_rejects_wrong_input() -> None:
    with pytest.raises(ValueError):
        Detector().detect(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError):
        detect_still(np.zeros((2, 8, 8), np.uint8))


def test_still_mode_on_synthetic_crops() -> None:
    from lymphosort.data.synth import render_crops

    images, _, meta = render_crops(24, seed=1)
    for img, cx, cy in zip(images, meta["center_x"], meta["center_y"]):
        dets = detect_still(img)
        assert len(dets) >= 1
        assert abs(dets[0].x - cx) < 4 and abs(dets[0].y - cy) < 4


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"real reference crops absent ({REFERENCE})")
def test_real_reference_crops_yield_exactly_one_detection_on_the_cell() -> None:
    files = sorted(REFERENCE.glob("*.png"))
    assert files
    for f in files:
        img = load_grey(f)
        dets = detect_still(img)
        assert len(dets) == 1, (f.name, dets)
        d = dets[0]
        h, w = img.shape
        assert abs(d.x - w / 2) < 25 and abs(d.y - h / 2) < 15, (f.name, d)  # on the cell, not a wall
        bw, bh = d.box[2] - d.box[0], d.box[3] - d.box[1]
        assert 12 <= bw <= 45 and 12 <= bh <= 45, (f.name, d)  # a 15-20 px cell with its halo


def test_config_is_frozen() -> None:
    cfg = DetectorConfig()
    with pytest.raises(Exception):
        cfg.step = 3  # type: ignore[misc]

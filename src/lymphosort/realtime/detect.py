"""Cell detection: slowly adapting background, subtraction, threshold, connected components.

Stream mode (`Detector`): the background is a running mean of the frames (pixels under a
detected cell are not learnt), so static walls, debris stuck to the glass, fixed pattern
and illumination cancel. Search is done on a subsampled frame (`step`, default every 2nd
pixel in x and y: ~8k pixels at 96x320) because labelling the full frame costs more than
classifying a cell; centres and boxes are mapped back to full-resolution pixels. The
background is kept on that grid only (the running mean is pointwise, so this is the
full-resolution mean subsampled, at a quarter of the cost).

Speed: at ~4,000 frames/s a frame has a budget of ~250 us on one core, and numpy costs
~1 us per call whatever the array size. Per frame the stream detector makes one compiled
call (numba, the `realtime` extra): the foreground test over the subsampled grid, then
labelling and statistics of the few hundred foreground pixels, instead of ~40 us of
vectorised calls. The vectorised version (`_rows`) is the reference, the fallback without
numba and the still-image path; both give the same numbers (same summation order).

Still mode (`detect_still`): one image, no history. The background is estimated from the
image itself: the per-row median (horizontal channel walls and black padding rows
cancel), then a per-column median of what is left (illumination gradients along x).

Blob filters: area (full-resolution px of the above-threshold mask), box aspect and
fill. Very long thin blobs are walls, tiny ones debris or noise; large or elongated blobs
are kept but flagged `doublet` (the sorter must reject them, not miss them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable, NamedTuple

import numpy as np
from scipy import ndimage as ndi

__all__ = ["BRIGHTFIELD", "Detection", "DetectorConfig", "Detector", "detect_still"]

_EIGHT = np.ones((3, 3), dtype=bool)


@lru_cache(maxsize=16)
def _grid(gh: int, gw: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Lookup tables of a (gh, gw) search grid by flat index: x, y, and the flat index of its
    cell in the coarse map of c x c blocks; and the coarse map's shape. Read-only (cached);
    int32 to halve what the per-frame gathers pull through the cache."""
    gy, gx = np.divmod(np.arange(gh * gw, dtype=np.int32), np.int32(gw))
    hc, wc = -(-gh // c), -(-gw // c)
    coarse = (gy // c) * wc + gx // c
    for a in (gx, gy, coarse):
        a.flags.writeable = False
    return gx, gy, coarse, hc, wc


@dataclass(frozen=True)
class DetectorConfig:
    """Units: px of the full-resolution frame unless said otherwise; grey levels for contrast."""

    step: int = 2  # subsampling of the search grid (1 = full resolution)
    threshold_sigma: float = 5.0  # |frame - background| > this many noise sigmas
    min_threshold: float = 10.0  # grey levels; floor of the threshold (noise-free frames)
    min_area: float = 60.0  # px of the mask; smaller blobs are noise or debris
    # LymphoSim 3.x frames (the dataset crops' scale): a cell's box is ~50-60 px, its
    # above-threshold mask ~1,000-2,000 px (the 2.x brightfield frames: 1,500 and 44)
    max_single_area: float = 3200.0  # larger blobs (mask px) are flagged doublet
    max_extent: float = 66.0  # px; a box side longer than this is a doublet (or a wall, below)
    wall_aspect: float = 4.0  # box width/height (or height/width) above this: a wall or streak, rejected
    doublet_aspect: float = 1.6  # box aspect above this (and not a wall): two cells side by side
    merge_gap: float = 4.0  # px; fragments (dark body, bright halo) within about this form one blob
    edge_margin: int = 1  # px; a box within this of the left/right frame edge is partly out of view
    bg_alpha: float = 0.05  # running-mean rate per background update
    bg_every: int = 16  # update the background every N frames (it drifts over 100s of frames)
    #: frames whose per-pixel consensus (the level most of them agree on) becomes the
    #: background, and whose spread there sets the noise threshold: cells move on, the
    #: channel stays. One frame's own row/column medians (the start, and all of it with 1) can
    #: hold a crowded frame's cells, which then stay as ghosts: the rare precision collapse
    bg_warmup: int = 15
    #: updates a grid pixel may stay inside detections while unchanged (within the threshold
    #: at each of bg_heal_after + 1 samples bg_every frames apart) before it is learnt anyway:
    #: a passing cell never holds still that long, a ghost of a wrong background always does
    bg_heal_after: int = 2
    still_smooth: float = 1.0  # Gaussian sigma (px) before thresholding a still image
    still_min_area: float = 150.0  # px; in stills the smoothed mask of a debris dot reaches ~100
    #: px; in a still (no history to subtract) a relief cell shows as a dark and a bright
    #: crescent ~20-30 px apart with quieter texture between: join fragments this close
    still_merge_gap: float = 16.0


#: the LymphoSim 2.x brightfield frames and crops (a ~20 px cell with a dark body and halo)
BRIGHTFIELD = DetectorConfig(max_single_area=1500.0, max_extent=44.0, still_merge_gap=4.0)


class Detection(NamedTuple):  # a tuple: ~3x cheaper to make than a frozen dataclass, same fields
    x: float  # centre (full-resolution px, flow along +x)
    y: float
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive
    area: float  # px of the above-threshold mask
    partial: bool  # touches the left or right frame edge: not fully in view
    doublet: bool  # too large or elongated for one cell


def _min_px(cfg: DetectorConfig, step: int) -> int:
    """Fewest mask pixels of a blob: area = px * step^2 >= min_area (and >= 1: never label 0)."""
    return max(1, math.ceil(cfg.min_area / (step * step)))


def _rows(mask: np.ndarray, weight: Callable[[np.ndarray], np.ndarray], step: int,
          cfg: DetectorConfig) -> list[list[float]]:
    """Per blob of a foreground `mask` (on a grid of `step` px) with enough pixels: grid box
    (x0, y0, x1, y1 inclusive), mask px, and sums of w, w*x, w*y where `weight(idx)` gives
    |frame - background| at the mask's flat indices (for the weighted centroid).

    Fragments of one cell (dark body, bright halo, texture) are joined by labelling a
    coarse occupancy map (blocks of merge_gap/step grid px, 8-connected), which is much
    cheaper than labelling the grid and then merging boxes in Python. Statistics come from
    the mask pixels, vectorised; blobs in scipy's label order (raster order of first block).
    """
    idx = mask.ravel().nonzero()[0]
    if idx.size == 0:
        return []
    gh, gw = mask.shape
    gx_of, gy_of, coarse_of, hc, wc = _grid(gh, gw, max(1, int(round(cfg.merge_gap / step))))
    ci = coarse_of[idx]
    occ = np.zeros(hc * wc, dtype=bool)
    occ[ci] = True
    lab, n = ndi.label(occ.reshape(hc, wc), structure=_EIGHT)
    li = lab.ravel()[ci]
    gx, gy = gx_of[idx], gy_of[idx]
    w = weight(idx)
    n1 = n + 1
    counts = np.bincount(li, minlength=n1)
    wsum = np.bincount(li, weights=w, minlength=n1)
    wx = np.bincount(li, weights=np.multiply(w, gx, dtype=np.float64), minlength=n1)
    wy = np.bincount(li, weights=np.multiply(w, gy, dtype=np.float64), minlength=n1)
    # exact boxes: per-label min/max (1-D scatters are several times faster than 2-D ones)
    box = np.empty((4, n1), np.int32)
    box[:2] = 1 << 30
    box[2:] = -1
    np.minimum.at(box[0], li, gx)
    np.minimum.at(box[1], li, gy)
    np.maximum.at(box[2], li, gx)
    np.maximum.at(box[3], li, gy)
    keep = np.flatnonzero(counts >= _min_px(cfg, step))
    return np.vstack((box, counts, wsum, wx, wy))[:, keep].T.tolist()  # float64: exact for these ints


def _rows_loops(image: np.ndarray, lo: np.ndarray, span: np.ndarray, bg: np.ndarray, step: int, c: int,
                min_px: int) -> np.ndarray:
    """The stream detector's whole per-frame search in plain loops, compiled by numba: the
    foreground mask on the (gh, gw) grid of `lo`, `span` (see `Detector`), then `_rows` of it
    with w = |image[step*gy, step*gx] - bg[gy, gx]| (float32, as numpy computes it, summed in
    float64 in raster order: the same numbers as `_rows`). One compiled call a frame: the
    mask test in numpy cost three calls and a nonzero (~8 us a frame), more than the loop.
    Labels: two-pass union-find on the coarse map; provisional labels are made in raster
    order and a set's root is its smallest one, so numbering roots in order is scipy's.
    The scan keeps each foreground pixel's grid x, y and coarse block (no divmod later: that
    and row views instead of 2-D indexing took the call from ~36 to ~25 us a frame)."""
    gh, gw = lo.shape
    hc, wc = (gh + c - 1) // c, (gw + c - 1) // c
    px = np.empty(gh * gw, np.int32)  # per foreground pixel, raster order: grid x,
    py = np.empty(gh * gw, np.int32)  # grid y,
    pk = np.empty(gh * gw, np.int32)  # and its block of the coarse map
    occ = np.zeros(hc * wc, np.int32)  # -1: occupied; then its provisional label
    m = 0
    for gy in range(gh):
        row, lrow, srow = image[gy * step], lo[gy], span[gy]
        kbase = (gy // c) * wc
        for gx in range(gw):
            # lo <= v <= hi as one wrapping uint8 subtraction: (v - lo) mod 256 <= hi - lo
            if ((np.int64(row[gx * step]) - lrow[gx]) & 255) > srow[gx]:
                k = kbase + gx // c
                px[m], py[m], pk[m] = gx, gy, k
                occ[k] = -1
                m += 1
    parent = np.empty(hc * wc + 1, np.int32)
    nxt = 1
    for y in range(hc):
        for x in range(wc):
            if occ[y * wc + x] == 0:
                continue
            best = 0
            for j in range(4):  # the 8-neighbours already visited: up-left, up, up-right, left
                yy, xx = (y - 1, x + j - 1) if j < 3 else (y, x - 1)
                if yy < 0 or xx < 0 or xx >= wc:
                    continue
                lab = occ[yy * wc + xx]
                if lab > 0:
                    while parent[lab] != lab:
                        lab = parent[lab]
                    if best == 0:
                        best = lab
                    elif lab < best:
                        parent[best] = lab
                        best = lab
                    elif lab > best:
                        parent[lab] = best
            if best == 0:
                parent[nxt] = nxt
                best = nxt
                nxt += 1
            occ[y * wc + x] = best
    final = np.zeros(nxt, np.int32)
    n = 0
    for lab in range(1, nxt):
        r = lab
        while parent[r] != r:
            r = parent[r]
        if r == lab:
            n += 1
            final[lab] = n
        else:
            final[lab] = final[r]
    st = np.zeros((n + 1, 8))
    st[:, 0:2] = 1 << 30
    st[:, 2:4] = -1
    for i in range(m):
        gx, gy = px[i], py[i]
        k = final[occ[pk[i]]]
        w = np.float64(abs(np.float32(image[gy * step, gx * step]) - bg[gy, gx]))
        s = st[k]
        s[0] = min(s[0], gx)
        s[1] = min(s[1], gy)
        s[2] = max(s[2], gx)
        s[3] = max(s[3], gy)
        s[4] += 1
        s[5] += w
        s[6] += w * gx
        s[7] += w * gy
    keep = 0
    for k in range(1, n + 1):
        if st[k, 4] >= min_px:
            st[keep] = st[k]
            keep += 1
    return st[:keep]


@lru_cache(maxsize=1)
def _rows_compiled() -> Callable[..., np.ndarray] | None:
    """`_rows_loops` compiled (cached on disk by numba) and warmed up; None without numba."""
    try:
        from numba import njit
    except ImportError:
        return None
    fn: Any = njit(cache=True)(_rows_loops)
    z = np.zeros((2, 2), np.uint8)
    fn(np.zeros((4, 4), np.uint8), z, z, np.zeros((2, 2), np.float32), 2, 2, 1)
    return fn


def _detections(rows: list[list[float]], step: int, width: int, height: int, cfg: DetectorConfig,
                rejected: list[tuple[int, int, int, int]] | None = None) -> list[Detection]:
    """Blob rows (see `_rows`) as detections in full-resolution px, after the shape filters
    (the boxes of blobs rejected as walls go to `rejected` when given).
    Plain Python numbers: per-blob numpy scalar arithmetic costs microseconds."""
    out = []
    for x0, y0, x1, y1, cnt, ws, sx, sy in rows:
        a, cx, cy = cnt * step * step, sx / ws * step, sy / ws * step
        bx0, by0 = int(x0) * step, int(y0) * step
        bx1, by1 = min(width, (int(x1) + 1) * step), min(height, (int(y1) + 1) * step)
        bw, bh = bx1 - bx0, by1 - by0
        long_side, short_side = max(bw, bh), max(1, min(bw, bh))
        aspect = long_side / short_side
        if aspect > cfg.wall_aspect and long_side > cfg.max_extent:
            if rejected is not None:
                rejected.append((bx0, by0, bx1, by1))
            continue  # a wall, a streak or a train of touching cells: not one cell
        doublet = a > cfg.max_single_area or long_side > cfg.max_extent or aspect > cfg.doublet_aspect
        partial = bx0 <= cfg.edge_margin or bx1 >= width - cfg.edge_margin
        # centre: |diff|-weighted centroid of body and halo (robust to a clipped halo pixel)
        out.append(Detection(cx, cy, (bx0, by0, bx1, by1), a, partial, doublet))
    return out


def _blobs(mask: np.ndarray, weight: Callable[[np.ndarray], np.ndarray], step: int, width: int,
           height: int, cfg: DetectorConfig) -> list[Detection]:
    """Detections of a foreground mask (see `_rows` and `_detections`)."""
    return _detections(_rows(mask, weight, step, cfg), step, width, height, cfg)


class Detector:
    """Stream detector with a running-mean background (call `detect` once per frame).

    Per frame it only tests the subsampled frame against two precomputed uint8 bounds
    (background -/+ threshold): no float image, no full-size difference image. The test
    `lo <= v <= hi` is one subtraction and one comparison in wrapping uint8 arithmetic:
    `(v - lo) mod 256 <= hi - lo` (for v < lo the difference wraps to 256 + v - lo > 255 >= hi - lo).
    """

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        self.config = config
        self._bg: np.ndarray | None = None  # float32 background on the search grid
        self._lo: np.ndarray | None = None  # uint8 bounds on the search grid: foreground outside [lo, hi]
        self._span: np.ndarray | None = None  # hi - lo
        self._at: np.ndarray | None = None  # flat frame index of each grid pixel
        self._buf: np.ndarray | None = None  # per-frame scratch: subsampled frame - lo (uint8),
        self._mask: np.ndarray | None = None  # and the foreground mask
        self._shape: tuple[int, ...] | None = None  # frame shape the background belongs to
        self._thr = float(config.min_threshold)
        self._n = 0
        self._warm: list[np.ndarray] | None = None  # grid samples of the warm-up (None: done)
        self._prev: np.ndarray | None = None  # uint8 grid sample of the previous background update
        self._still: np.ndarray | None = None  # per grid pixel: updates held inside detections unchanged
        self._rows = _rows_compiled()  # compiled once per process (a few s; ~0.1 s from numba's cache)
        self._coarse = max(1, int(round(config.merge_gap / config.step)))  # coarse-map block, grid px
        self._min_px = _min_px(config, config.step)
        self.noise_sigma = float("nan")
        #: boxes of the last frame's blobs rejected as walls: not cells, but not background
        #: either (a static wall is in the background already; a train of cells is not)
        self.rejected: list[tuple[int, int, int, int]] = []

    def reset(self) -> None:
        self._bg = None
        self._n = 0
        self._warm = self._prev = self._still = None

    def _init_background(self, image: np.ndarray) -> None:
        # Until frames accumulate, the image's own row/column medians are the best guess.
        s = self.config.step
        bg = _self_background(image.astype(np.float32))[::s, ::s]
        resid = image[::s, ::s].astype(np.float32) - bg
        self.noise_sigma = float(1.4826 * np.median(np.abs(resid - np.median(resid))))
        self._thr = max(self.config.min_threshold, self.config.threshold_sigma * self.noise_sigma)
        self._shape = image.shape
        self._at = (np.arange(0, image.shape[0], s)[:, None] * image.shape[1] + np.arange(0, image.shape[1], s)).ravel()
        self._buf, self._mask = np.empty(bg.shape, np.uint8), np.empty(bg.shape, np.bool_)
        self._warm = [] if self.config.bg_warmup > 1 else None
        self._prev, self._still = None, np.zeros(bg.shape, np.uint8)
        self._set_background(np.ascontiguousarray(bg))

    def _end_warmup(self) -> None:
        """Per grid pixel, the value most warm-up samples agree on (within a noise window) as
        the background, and the noise from those samples' spread. Cells move on and their
        relief and texture scatter, while the channel repeats itself: in a dense flow a cell
        covers a centre pixel in most frames, where a median would take the cell's level."""
        stack = np.stack(self._warm)  # (K, gh, gw) uint8
        self._warm = None
        w = min(int(max(self.config.min_threshold / 2, 2 * self.noise_sigma)), 127)
        # |a - b| <= w in wrapping uint8: (a - b + w) mod 256 <= 2w; one sample at a time keeps
        # this a few ms (it runs once, on the decision thread)
        best_n = np.full(stack.shape[1:], -1, np.int16)
        best = np.zeros(stack.shape[1:], np.uint8)
        for v in stack:
            n = ((stack - v + np.uint8(w)) <= 2 * w).sum(axis=0, dtype=np.int16)
            more = n > best_n
            best_n[more], best[more] = n[more], v[more]  # the sample with the most company
        near = (stack - best + np.uint8(w)) <= 2 * w  # (K, gh, gw): samples that agree with it
        stack = stack.astype(np.float32)
        bg = (stack * near).sum(axis=0) / near.sum(axis=0)
        resid = np.abs(stack - bg)[near]
        sigma = float(1.4826 * np.median(resid)) if resid.size else 0.0
        if sigma > 0:  # quantised, near noise-free frames: keep the first frame's estimate
            self.noise_sigma = sigma
            self._thr = max(self.config.min_threshold, self.config.threshold_sigma * sigma)
        self._set_background(np.ascontiguousarray(bg, dtype=np.float32))

    def _set_background(self, bg: np.ndarray) -> None:
        self._bg = bg
        # v > floor(bg + thr)  <=>  v - bg > thr for integer pixels; likewise below
        # (in place, min/max for clip: this runs in the loop every bg_every frames)
        t = np.add(bg, self._thr)
        hi = np.minimum(np.floor(t, out=t), 255, out=t).astype(np.uint8)
        t = np.subtract(bg, self._thr)
        self._lo = np.maximum(np.ceil(t, out=t), 0, out=t).astype(np.uint8)
        self._span = hi - self._lo  # thr > 0, so hi >= lo: no wrap

    def detect(self, image: np.ndarray) -> list[Detection]:
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 [H, W] frame, got {image.dtype} {image.shape}")
        if self._bg is None or self._shape != image.shape:
            self._init_background(image)
        s, cfg = self.config.step, self.config
        h, w = image.shape
        if self._rows is not None:
            rows = self._rows(image, self._lo, self._span, self._bg, s, self._coarse, self._min_px).tolist()
        else:
            mask = np.greater(np.subtract(image[::s, ::s], self._lo, out=self._buf), self._span, out=self._mask)
            flat, bg, at = image.ravel(), self._bg.ravel(), self._at
            rows = _rows(mask, lambda idx: np.abs(flat[at[idx]] - bg[idx]), s, cfg)
        self.rejected.clear()
        dets = _detections(rows, s, w, h, cfg, self.rejected)
        self._n += 1
        if self._warm is not None:
            self._warm.append(image[::s, ::s].copy())
            if len(self._warm) >= cfg.bg_warmup:
                self._end_warmup()
        elif self._n % cfg.bg_every == 0:
            self._update(image[::s, ::s], [d.box for d in dets] + self.rejected)
        return dets

    def _update(self, sub: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> None:
        """Running mean on the grid, except under blobs' boxes (cells are not learnt) unless a
        pixel there has held still for bg_heal_after updates. Grid pixel (gy, gx) is frame
        pixel (s*gy, s*gx), so the frame-pixel margin [y0 - 2, y1 + 2) around a cell is grid
        rows [ceil((y0-2)/s), ceil((y1+2)/s)). uint8 in-place steps: this runs in the loop."""
        assert self._bg is not None and self._still is not None
        s = self.config.step
        delta = sub.astype(np.float32)
        delta -= self._bg
        held = np.zeros(sub.shape, np.bool_)
        for x0, y0, x1, y1 in boxes:
            held[-(-max(0, y0 - 2) // s):-(-(y1 + 2) // s), -(-max(0, x0 - 2) // s):-(-(x1 + 2) // s)] = True
        still = self._still
        if self._prev is None:  # nothing to compare with yet (the counts are still zero)
            self._prev = np.empty(sub.shape, np.uint8)
        else:  # |sub - prev| <= t in wrapping uint8: (sub - prev + t) mod 256 <= 2t (t < 128)
            t = min(int(self._thr), 127)
            same = np.subtract(sub, self._prev, out=self._buf)
            same += np.uint8(t)
            np.less_equal(same, 2 * t, out=self._mask)
            self._mask &= held
            np.minimum(still, 254, out=still)  # saturate at 255: a uint8 count never wraps
            still += 1
            still *= self._mask  # counts consecutive updates held and unchanged; 0 elsewhere
        np.copyto(self._prev, sub)
        learn = still > self.config.bg_heal_after  # >= 255: never
        learn |= ~held
        delta *= learn
        delta *= self.config.bg_alpha
        self._bg += delta
        self._set_background(self._bg)


def _self_background(img: np.ndarray) -> np.ndarray:
    """Background of one image: per-row median, then per-column median of the remainder."""
    bg = np.median(img, axis=1, keepdims=True) + np.zeros_like(img)
    bg += np.median(img - bg, axis=0, keepdims=True)
    return bg


def detect_still(image: np.ndarray, config: DetectorConfig = DetectorConfig()) -> list[Detection]:
    """Detect cells in a single image (a crop or one frame) with the background taken from the
    image itself. Returns detections sorted by area, largest first."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W] image, got {image.dtype} {image.shape}")
    img = image.astype(np.float32)
    resid = img - _self_background(img)
    if config.still_smooth > 0:
        resid = ndi.gaussian_filter(resid, config.still_smooth)
    # noise from the quietest quarter of the residual: a LymphoMNIST-scale cell fills ~45%
    # of a crop, so a median would measure the cell's texture (|N(0, s)| has its 25th
    # percentile at 0.3186 s)
    sigma = float(np.percentile(np.abs(resid - np.median(resid)), 25) / 0.3186)
    thr = max(config.min_threshold * 0.5, config.threshold_sigma * sigma)
    h, w = image.shape
    diff = np.abs(resid)
    flat = diff.ravel()
    found = _blobs(diff > thr, lambda idx: flat[idx], 1, w, h, replace(config, merge_gap=config.still_merge_gap))
    dets = [d for d in found if d.area >= config.still_min_area]
    return sorted(dets, key=lambda d: -d.area)

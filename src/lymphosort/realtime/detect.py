"""Cell detection: slowly adapting background, subtraction, threshold, connected components.

Stream mode (`Detector`): the background is a running mean of the frames (pixels under a
detected cell are not learnt), so static walls, debris stuck to the glass, fixed pattern
and illumination cancel. Search is done on a subsampled frame (`step`, default every 2nd
pixel in x and y: ~8k pixels at 96x320) because labelling the full frame costs more than
classifying a cell; centres and boxes are mapped back to full-resolution pixels.

Still mode (`detect_still`): one image, no history. The background is estimated from the
image itself: the per-row median (horizontal channel walls and black padding rows
cancel), then a per-column median of what is left (illumination gradients along x).

Blob filters: area (full-resolution px of the above-threshold mask), box aspect and
fill. Very long thin blobs are walls, tiny ones debris or noise; large or elongated blobs
are kept but flagged `doublet` (the sorter must reject them, not miss them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

__all__ = ["Detection", "DetectorConfig", "Detector", "detect_still"]

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class DetectorConfig:
    """Units: px of the full-resolution frame unless said otherwise; grey levels for contrast."""

    step: int = 2  # subsampling of the search grid (1 = full resolution)
    threshold_sigma: float = 5.0  # |frame - background| > this many noise sigmas
    min_threshold: float = 10.0  # grey levels; floor of the threshold (noise-free frames)
    min_area: float = 60.0  # px of the mask; smaller blobs are noise or debris
    max_single_area: float = 1500.0  # larger blobs (mask px) are flagged doublet
    max_extent: float = 44.0  # px; a box side longer than this is a doublet (or a wall, below)
    wall_aspect: float = 4.0  # box width/height (or height/width) above this: a wall or streak, rejected
    doublet_aspect: float = 1.6  # box aspect above this (and not a wall): two cells side by side
    merge_gap: float = 4.0  # px; fragments (dark body, bright halo) within about this form one blob
    edge_margin: int = 1  # px; a box within this of the left/right frame edge is partly out of view
    bg_alpha: float = 0.05  # running-mean rate per background update
    bg_every: int = 16  # update the background every N frames (it drifts over 100s of frames)
    still_smooth: float = 1.0  # Gaussian sigma (px) before thresholding a still image
    still_min_area: float = 150.0  # px; in stills the smoothed mask of a debris dot reaches ~100


@dataclass(frozen=True)
class Detection:
    x: float  # centre (full-resolution px, flow along +x)
    y: float
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive
    area: float  # px of the above-threshold mask
    partial: bool  # touches the left or right frame edge: not fully in view
    doublet: bool  # too large or elongated for one cell


def _blobs(mask: np.ndarray, weight: Callable[[np.ndarray, np.ndarray], np.ndarray], step: int, width: int,
           height: int, cfg: DetectorConfig) -> list[Detection]:
    """Components of a foreground `mask` (on a grid of `step` px) as detections; `weight(gy, gx)`
    gives |frame - background| at mask pixels (for the weighted centroid).

    Fragments of one cell (dark body, bright halo, texture) are joined by labelling a
    coarse occupancy map (blocks of `block` grid px, 8-connected), which is much cheaper
    than labelling the grid and then merging boxes in Python. Statistics (area, weighted
    centroid, exact box) come from the mask pixels, vectorised.
    """
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    gh, gw = mask.shape
    c = max(1, int(round(cfg.merge_gap / step)))
    hc, wc = -(-gh // c), -(-gw // c)
    gy, gx = np.divmod(idx, gw)
    cy_, cx_ = gy // c, gx // c
    occ = np.zeros((hc, wc), dtype=bool)
    occ[cy_, cx_] = True
    lab, n = ndi.label(occ, structure=_EIGHT)
    li = lab[cy_, cx_]
    w = weight(gy, gx)
    counts = np.bincount(li, minlength=n + 1)
    wsum = np.bincount(li, weights=w, minlength=n + 1)
    wx = np.bincount(li, weights=w * gx, minlength=n + 1)
    wy = np.bincount(li, weights=w * gy, minlength=n + 1)
    # exact boxes: per-label min/max (1-D scatters are several times faster than 2-D ones)
    lo = np.full((2, n + 1), 1 << 30, np.int64)
    hi = np.zeros((2, n + 1), np.int64)
    np.minimum.at(lo[0], li, gx)
    np.minimum.at(lo[1], li, gy)
    np.maximum.at(hi[0], li, gx)
    np.maximum.at(hi[1], li, gy)
    area = counts * float(step * step)
    keep = np.flatnonzero(area >= cfg.min_area)  # label 0 (background) has no mask pixels
    if keep.size == 0:
        return []
    # one table, then plain Python numbers: per-blob numpy scalar arithmetic costs microseconds
    ws = wsum[keep]
    tab = np.empty((keep.size, 7))
    tab[:, 0:2] = lo[:, keep].T
    tab[:, 2:4] = hi[:, keep].T + 1
    tab[:, 0:4] *= step
    tab[:, 4] = area[keep]
    tab[:, 5] = wx[keep] / ws * step
    tab[:, 6] = wy[keep] / ws * step
    rows = tab.tolist()
    out = []
    for fx0, fy0, fx1, fy1, a, cx, cy in rows:
        bx0, by0, bx1, by1 = int(fx0), int(fy0), min(width, int(fx1)), min(height, int(fy1))
        bw, bh = bx1 - bx0, by1 - by0
        long_side, short_side = max(bw, bh), max(1, min(bw, bh))
        aspect = long_side / short_side
        if aspect > cfg.wall_aspect and long_side > cfg.max_extent:
            continue  # a wall or a streak, not a cell
        doublet = a > cfg.max_single_area or long_side > cfg.max_extent or aspect > cfg.doublet_aspect
        partial = bx0 <= cfg.edge_margin or bx1 >= width - cfg.edge_margin
        # centre: |diff|-weighted centroid of body and halo (robust to a clipped halo pixel)
        out.append(Detection(cx, cy, (bx0, by0, bx1, by1), a, partial, doublet))
    return out


class Detector:
    """Stream detector with a running-mean background (call `detect` once per frame).

    Per frame it only compares the subsampled frame with two precomputed uint8 bounds
    (background -/+ threshold): no float image, no full-size difference image.
    """

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        self.config = config
        self._bg: np.ndarray | None = None  # float32 full resolution
        self._bg_sub: np.ndarray | None = None  # float32 on the search grid
        self._lo: np.ndarray | None = None  # uint8 bounds on the search grid: foreground outside [lo, hi]
        self._hi: np.ndarray | None = None
        self._thr = float(config.min_threshold)
        self._n = 0
        self.noise_sigma = float("nan")

    def reset(self) -> None:
        self._bg = None
        self._n = 0

    def _init_background(self, image: np.ndarray) -> None:
        # Until frames accumulate, the image's own row/column medians are the best guess.
        s = self.config.step
        bg = _self_background(image.astype(np.float32))
        resid = image[::s, ::s].astype(np.float32) - bg[::s, ::s]
        self.noise_sigma = float(1.4826 * np.median(np.abs(resid - np.median(resid))))
        self._thr = max(self.config.min_threshold, self.config.threshold_sigma * self.noise_sigma)
        self._set_background(bg)

    def _set_background(self, bg: np.ndarray) -> None:
        s = self.config.step
        self._bg = bg
        self._bg_sub = np.ascontiguousarray(bg[::s, ::s])
        # sub > floor(bg + thr)  <=>  sub - bg > thr for integer pixels; likewise below
        self._hi = np.clip(np.floor(self._bg_sub + self._thr), 0, 255).astype(np.uint8)
        self._lo = np.clip(np.ceil(self._bg_sub - self._thr), 0, 255).astype(np.uint8)

    def detect(self, image: np.ndarray) -> list[Detection]:
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 [H, W] frame, got {image.dtype} {image.shape}")
        if self._bg is None or self._bg.shape != image.shape:
            self._init_background(image)
        s, cfg = self.config.step, self.config
        h, w = image.shape
        sub = image[::s, ::s]
        mask = sub > self._hi
        mask |= sub < self._lo
        bg = self._bg_sub
        dets = _blobs(mask, lambda gy, gx: np.abs(sub[gy, gx] - bg[gy, gx]), s, w, h, cfg)
        self._n += 1
        if self._n % cfg.bg_every == 0:
            self._update(image, dets)
        return dets

    def _update(self, image: np.ndarray, dets: list[Detection]) -> None:
        assert self._bg is not None
        delta = image.astype(np.float32)
        delta -= self._bg
        for d in dets:  # do not learn the cells into the background
            x0, y0, x1, y1 = d.box
            delta[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = 0.0
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
    sigma = float(1.4826 * np.median(np.abs(resid - np.median(resid))))
    thr = max(config.min_threshold * 0.5, config.threshold_sigma * sigma)
    h, w = image.shape
    diff = np.abs(resid)
    found = _blobs(diff > thr, lambda gy, gx: diff[gy, gx], 1, w, h, config)
    dets = [d for d in found if d.area >= config.still_min_area]
    return sorted(dets, key=lambda d: -d.area)

"""Appearance statistics of one bright-field crop, measured the same way on real and simulated.

Used by `benchmarks/synth_calibration.py` (real vs sim table) and by the tests (the simulator
must stay inside the range measured on the real crops).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Statistic name -> one-line meaning (the calibration table's legend).
STAT_DOC: dict[str, str] = {
    "background": "median grey level of non-padding pixels",
    "noise_std": "flat-background noise std: 3-sigma-trimmed std of horizontal pixel differences / sqrt(2)",
    "cell_diameter": "equivalent diameter (px) of the filled dark blob nearest the centre",
    "cell_darkness": "background minus the darkest smoothed level inside the cell",
    "halo_contrast": "90th percentile of the smoothed 1-5 px ring outside the cell minus background",
    "wall": "1 if some row's median is >= 12 levels below background (channel wall band)",
    "debris": "number of small (1-12 px) dark blobs away from the cell and walls",
}


def crop_statistics(image: np.ndarray) -> dict[str, float]:
    """Statistics of one grey crop (uint8 [H, W]); see `STAT_DOC`."""
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    valid_rows = img.max(axis=1) > 0  # black padding rows (crop ran past the frame)
    px = img[valid_rows]
    bg = float(np.median(px))
    # Differences of neighbours cancel the smooth background; trimming at 3 robust sigmas
    # drops the cell and wall edges. (A plain MAD is quantised to integer grey steps.)
    dx = np.diff(px, axis=1).ravel()
    mad = max(float(np.median(np.abs(dx))), 0.5)
    core = dx[np.abs(dx) <= 3.0 * 1.4826 * mad]
    noise = float(core.std() / np.sqrt(2.0) / 0.9866)  # 0.9866: std of a normal cut at 3 sigma

    smooth = ndimage.gaussian_filter(img, 1.0)
    row_med = np.median(img, axis=1)
    wall_rows = valid_rows & (row_med < bg - 12)
    dark = (smooth < bg - max(8.0, 4.0 * noise)) & valid_rows[:, None]
    dark[wall_rows] = False
    lab, n = ndimage.label(dark)
    diameter = darkness = halo = 0.0
    cell = np.zeros_like(dark)
    if n:
        # the cell is the largest dark blob weighted by closeness to the centre
        idx = np.arange(1, n + 1)
        areas = ndimage.sum(np.ones_like(img), lab, idx)
        cy, cx = np.array(ndimage.center_of_mass(np.ones_like(img), lab, idx)).T
        dist = np.hypot(cy - (h - 1) / 2, cx - (w - 1) / 2)
        score = areas / (1.0 + (dist / 8.0) ** 2)
        k = int(idx[np.argmax(score)])
        if areas[k - 1] >= 12:
            cell = ndimage.binary_fill_holes(lab == k)
            diameter = float(2.0 * np.sqrt(cell.sum() / np.pi))
            darkness = float(bg - smooth[cell].min())
            ring = ndimage.binary_dilation(cell, iterations=5) & ~ndimage.binary_dilation(cell, iterations=1)
            ring &= ~wall_rows[:, None]
            if ring.any():
                halo = float(np.percentile(smooth[ring], 90) - bg)
    # debris: small dark blobs elsewhere, on a lightly smoothed image
    s2 = ndimage.gaussian_filter(img, 0.7)
    spots = (s2 < bg - max(10.0, 5.0 * noise)) & valid_rows[:, None]
    spots &= ~ndimage.binary_dilation(cell, iterations=3)
    spots[ndimage.binary_dilation(wall_rows, iterations=3)] = False
    lab2, n2 = ndimage.label(spots)
    debris = 0
    if n2:
        a2 = ndimage.sum(np.ones_like(img), lab2, np.arange(1, n2 + 1))
        debris = int(((a2 >= 1) & (a2 <= 12)).sum())
    return {
        "background": bg,
        "noise_std": noise,
        "cell_diameter": diameter,
        "cell_darkness": darkness,
        "halo_contrast": halo,
        "wall": float(wall_rows.any()),
        "debris": float(debris),
    }


def summarize(images: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-statistic mean, std, min, max (and 5/95 percentiles) over a stack of crops."""
    rows = [crop_statistics(im) for im in images]
    out: dict[str, dict[str, float]] = {}
    for key in STAT_DOC:
        v = np.array([r[key] for r in rows])
        if key in ("cell_darkness", "halo_contrast", "cell_diameter"):
            v = v[np.array([r["cell_diameter"] for r in rows]) > 0]
        out[key] = {
            "mean": float(v.mean()) if v.size else float("nan"),
            "std": float(v.std()) if v.size else float("nan"),
            "min": float(v.min()) if v.size else float("nan"),
            "p05": float(np.percentile(v, 5)) if v.size else float("nan"),
            "p95": float(np.percentile(v, 95)) if v.size else float("nan"),
            "max": float(v.max()) if v.size else float("nan"),
        }
    return out

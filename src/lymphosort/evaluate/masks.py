"""Cell masks and the background ring around them, for the confound audit (``evaluate.audit``).

Cell masks come from smoothed gradient magnitude and intensity deviation from the crop's
border level, the component at the centre, filled (convex hull and fitted circle), dilated; a
centred disc is used when that fails. Everything outside the mask is the *background ring*:
``blank_ring`` replaces it by a constant, ``ring_features`` summarises it (grey-level
statistics, noise, gradient and texture, illumination tilt; never the ring's area, which is
the cell's size).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage as ndi

from lymphosort.errors import AuditError

__all__ = [
    "BLANK_MODES",
    "DILATE_PX",
    "EDGE_MADS",
    "RING_FEATURES",
    "blank_ring",
    "cell_masks",
    "check_images",
    "ring_features",
]

# --- cell mask ----------------------------------------------------------------------------
SMOOTH_SIGMA = 1.5  #: px; smoothing before gradient / deviation (noise is per pixel)
EDGE_MADS = 4.0  #: threshold, in robust SDs of the crop's border statistics
GRAD_FLOOR = 1.0  #: grey levels/px; minimum gradient threshold (noise-free crops)
DEV_FLOOR = 4.0  #: grey levels; minimum deviation from the border level
BORDER_PX = 3  #: width of the border strip that estimates background level and noise
CENTRE_FRAC = 0.25  #: cell components reach within this fraction of the side of the centre ...
OUTER_FRAC = 0.4  #: ... or within this one without touching the crop's edge (see _select)
MIN_CELL_FRAC = 0.01  #: smaller components are noise, not a cell (1% of the crop ~ r 3.6 px at 64)
MAX_CELL_FRAC = 0.85  #: larger ones leave no ring: the segmentation caught the background
DILATE_PX = 2  #: grow the mask so the cell's blurred edge and halo stay on the cell side
FALLBACK_RADIUS_FRAC = 0.3  #: disc radius (fraction of the side) when no crop segments at all
TEXTURE_GAP_PX = 2  #: texture features skip ring pixels this close to the mask (the flat patch's edge)

#: Columns of ``ring_features``, in order.
RING_FEATURES: tuple[str, ...] = (
    "mean", "std", "p05", "p25", "p50", "p75", "p95",
    "noise_std", "grad_mean", "grad_p90", "log_abs_mean", "tilt_vertical", "tilt_horizontal",
)


def _disc(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def check_images(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[1] < 16:
        raise AuditError(f"images must be square crops [N, H, W] with H = W >= 16, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise AuditError("no images to audit")
    return arr


def _select(candidate: np.ndarray, side: int) -> np.ndarray | None:
    """The cell's part of `candidate`: every sizeable component near the centre, or None.

    A component counts when it comes within CENTRE_FRAC of the side of the centre, or
    within OUTER_FRAC without touching the crop's edge: a relief rim can break into
    opposite arcs that never reach the centre, while neighbours and walls enter from the edge.
    """
    labels, n = ndi.label(candidate)
    if n == 0:
        return None
    c = (side - 1) / 2
    yy, xx = np.indices(candidate.shape)
    dist = np.hypot(yy - c, xx - c)
    edge = np.zeros(candidate.shape)
    edge[[0, -1], :], edge[:, [0, -1]] = 1.0, 1.0
    idx = np.arange(1, n + 1)
    nearest = np.asarray(ndi.minimum(dist, labels, idx))
    area = np.asarray(ndi.sum(np.ones_like(dist), labels, idx))
    touches = np.asarray(ndi.maximum(edge, labels, idx)) > 0
    near = (nearest <= CENTRE_FRAC * side) | ((nearest <= OUTER_FRAC * side) & ~touches)
    keep = idx[near & (area >= MIN_CELL_FRAC * side * side)]
    return np.isin(labels, keep) if keep.size else None


def _convex_fill(component: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The component's convex hull joined with the circle through the hull's vertices.

    Relief (DIC-like) contrast is the derivative along one shear direction, so the rim
    fades where it runs along that direction: the component is often two opposite arcs,
    whose hull is a lens that misses the caps. The least-squares circle through the hull's
    vertices restores them; a lymphocyte is nearly round, so the union errs on the side of
    calling a little background "cell" (the safe side for this audit).
    """
    from scipy.spatial import ConvexHull, QhullError

    pts = np.argwhere(component).astype(np.float64)
    try:
        hull = ConvexHull(pts)
    except (QhullError, ValueError):  # a line or a few pixels
        return ndi.binary_fill_holes(component)
    # Inside = on the inner side of every facet (half a pixel of slack keeps the rim pixels).
    inside = (grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 0.5).all(axis=1)
    v = pts[hull.vertices]
    if len(v) >= 3:
        # Kasa fit: |p|^2 = 2 c.p + (r^2 - |c|^2), linear in (c, r^2 - |c|^2).
        a = np.column_stack([2 * v, np.ones(len(v))])
        (cy, cx, k), *_ = np.linalg.lstsq(a, (v**2).sum(1), rcond=None)
        r2 = k + cy**2 + cx**2
        side = component.shape[0]
        centre = (side - 1) / 2
        if 0 < r2 <= (0.5 * side) ** 2 and np.hypot(cy - centre, cx - centre) <= CENTRE_FRAC * side:
            inside |= ((grid - (cy, cx)) ** 2).sum(1) <= r2
    return inside.reshape(component.shape) | component


def cell_masks(images: np.ndarray, *, dilate: int = DILATE_PX) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-crop cell masks: (bool [N, H, W] dilated masks, bool [N] fell back, fallback radius px).

    A pixel is a candidate when its smoothed gradient magnitude or its smoothed deviation
    from the crop's border level exceeds the border's median by EDGE_MADS robust SDs (so
    both a dark cell and a relief-only rim are caught); candidates are closed, the
    component at the centre is kept and filled (convex hull joined with its fitted circle). A crop whose component is
    missing, too small or too large gets a centred disc of the median radius of the crops
    that did segment.
    """
    arr = check_images(images).astype(np.float32)
    n, side, _ = arr.shape
    s = (0.0, SMOOTH_SIGMA, SMOOTH_SIGMA)  # never smooth across crops
    smooth = ndi.gaussian_filter(arr, s)
    grad = np.hypot(ndi.gaussian_filter(arr, s, order=(0, 0, 1)), ndi.gaussian_filter(arr, s, order=(0, 1, 0)))
    border = np.ones((side, side), bool)
    border[BORDER_PX:-BORDER_PX, BORDER_PX:-BORDER_PX] = False

    def robust(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = x[:, border]
        med = np.median(b, axis=1)
        return med, 1.4826 * np.median(np.abs(b - med[:, None]), axis=1)

    g_med, g_sd = robust(grad)
    level, level_sd = robust(smooth)
    g_thr = g_med + np.maximum(EDGE_MADS * g_sd, GRAD_FLOOR)
    d_thr = np.maximum(EDGE_MADS * level_sd, DEV_FLOOR)
    candidate = (grad > g_thr[:, None, None]) | (np.abs(smooth - level[:, None, None]) > d_thr[:, None, None])

    close = _disc(1)
    grid = np.indices((side, side)).reshape(2, -1).T.astype(np.float64)
    raw = np.zeros((n, side, side), bool)
    ok = np.zeros(n, bool)
    for i in range(n):
        comp = _select(ndi.binary_closing(candidate[i], close, border_value=0), side)
        if comp is None:
            continue
        comp = _convex_fill(comp, grid)
        if comp.mean() <= MAX_CELL_FRAC:
            raw[i], ok[i] = comp, True
    if ok.any():
        radius = float(np.median(np.sqrt(raw[ok].sum((1, 2)) / np.pi)))
    else:
        radius = FALLBACK_RADIUS_FRAC * side
    c = (side - 1) / 2
    yy, xx = np.indices((side, side))
    disc = np.hypot(yy - c, xx - c) <= radius
    raw[~ok] = disc
    if dilate > 0:
        raw = ndi.binary_dilation(raw, _disc(dilate)[None])
    return raw, ~ok, radius


#: The first is the verdict's; the others are diagnostics (module docstring).
BLANK_MODES: tuple[str, ...] = ("global", "level-matched", "own-median")


def blank_ring(images: np.ndarray, masks: np.ndarray, mode: str = "global") -> tuple[np.ndarray, float]:
    """(uint8 crops with the ring outside `masks` blanked, the global constant).

    The global constant is the median of every ring pixel of the set. `mode`:
    ``global`` ring = constant, cell untouched; ``level-matched`` ring = constant and cell +
    (constant - crop's ring median); ``own-median`` ring = the crop's ring median.
    """
    arr = np.asarray(images)
    ring = np.where(masks, np.nan, arr.astype(np.float64)).reshape(len(arr), -1)
    own = np.nanmedian(ring, axis=1)[:, None, None]
    constant = float(np.rint(np.nanmedian(ring)))
    if mode == "level-matched":
        out = np.where(masks, arr + (constant - own), constant)
    elif mode == "global":
        out = np.where(masks, arr, constant)
    elif mode == "own-median":
        out = np.where(masks, arr, own)
    else:
        raise AuditError(f"unknown blanking mode {mode!r}; choose one of {', '.join(BLANK_MODES)}")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), constant


def _nan_stats(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per-crop nan-masked values of x where keep, as float64 [N, H*W] with NaN elsewhere."""
    return np.where(keep, x, np.nan).reshape(len(x), -1).astype(np.float64)


def ring_features(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """float64 [N, len(RING_FEATURES)] computed only from pixels outside `masks`.

    Grey-level statistics use the whole ring. Filter-based ones (noise, gradient, LoG) are
    computed with the cell replaced by the crop's ring median, so no filter ever sees a cell
    pixel, and read only ring pixels at least TEXTURE_GAP_PX from the mask (away from the
    flat patch's edge). The ring's size is deliberately not a feature: it is the cell's size.
    """
    arr = check_images(images).astype(np.float32)
    n, side, _ = arr.shape
    ring = ~masks
    if not ring.reshape(n, -1).any(1).all():
        raise AuditError("a cell mask covers the whole crop: no background ring to measure")
    far = ~ndi.binary_dilation(masks, _disc(TEXTURE_GAP_PX)[None])
    far = np.where(far.reshape(n, -1).any(1)[:, None, None], far, ring)  # tiny rings: use what there is
    g = _nan_stats(arr, ring)
    flat = np.where(masks, np.nanmedian(g, axis=1).astype(np.float32)[:, None, None], arr)
    s = (0.0, 1.0, 1.0)
    noise = flat - ndi.gaussian_filter(flat, s)
    grad = np.hypot(ndi.gaussian_filter(flat, s, order=(0, 0, 1)), ndi.gaussian_filter(flat, s, order=(0, 1, 0)))
    log_abs = np.abs(ndi.gaussian_laplace(flat, (0.0, 2.0, 2.0)))

    pct = np.nanpercentile(g, [5, 25, 50, 75, 95], axis=1).T
    half = side // 2
    top, left = np.zeros((side, side), bool), np.zeros((side, side), bool)
    top[:half], left[:, :half] = True, True

    def half_mean(region: np.ndarray) -> np.ndarray:
        # a half with no ring pixels (cell hugging one side) reads as the whole ring's mean
        m = np.nanmean(_nan_stats(arr, ring & region), axis=1)
        return np.where(np.isfinite(m), m, np.nanmean(g, axis=1))

    with warnings.catch_warnings():  # all-NaN rows are handled above; numpy's warning is noise
        warnings.simplefilter("ignore", RuntimeWarning)
        cols = [
            np.nanmean(g, 1), np.nanstd(g, 1), *pct.T,
            np.nanstd(_nan_stats(noise, far), 1),
            np.nanmean(_nan_stats(grad, far), 1), np.nanpercentile(_nan_stats(grad, far), 90, axis=1),
            np.nanmean(_nan_stats(log_abs, far), 1),
            half_mean(top) - half_mean(~top), half_mean(left) - half_mean(~left),
        ]
    return np.stack(cols, axis=1)

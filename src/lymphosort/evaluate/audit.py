"""Confound audit: does a trained model read the cell, or the background around it?

Real labs record each class in its own sessions, so illumination, noise, walls and debris
can name the class as well as the cell does. Two measurements on a split's crops:

* **Blanked accuracy**: the model's accuracy when every pixel outside the (dilated) cell
  mask, the *background ring*, is replaced by one global constant (``global``): the median
  ring grey level of the whole audited set, the same for every crop, with the cell left as
  it is. A per-crop constant (the crop's own ring median) would keep each crop's
  background level, which is exactly what a session confound changes, so it could not
  reveal a level shortcut. Two diagnostics are reported beside it, not used by the
  verdict: ``own-median`` (ring = the crop's ring median: only ring *structure* removed)
  and ``level-matched`` (global ring, and the cell shifted by the same amount as its
  background: removes the crop's illumination level from the cell too, so it also exposes
  a model that reads the level through the cell; it penalises a model that reads absolute
  cell grey levels, hence diagnostic only).
* **Ring-only classifier**: a fixed feature set computed from ring pixels only (grey-level
  statistics, noise, gradient and texture summaries, illumination tilt; never the ring's
  area, which is the cell's size), a scikit-learn gradient-boosted classifier, stratified
  5-fold cross-validation. Above chance means the background alone predicts the class.

The verdict flags the run when either exceeds a named threshold (see ``THRESHOLDS``).
Cell masks come from smoothed gradient magnitude and intensity deviation from the crop's
border level, the component at the centre, filled (convex hull and fitted circle), dilated; a centred disc is used
when that fails, and the audit reports how often.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from lymphosort.errors import LymphosortError

__all__ = [
    "AuditError",
    "BLANK_DROP_POINTS",
    "DILATE_PX",
    "RING_BACC_MARGIN",
    "RING_FEATURES",
    "THRESHOLDS",
    "audit_images",
    "audit_run",
    "BLANK_MODES",
    "blank_ring",
    "cell_masks",
    "ring_features",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# --- verdict thresholds -------------------------------------------------------------------
#: Ring-only balanced accuracy must beat chance (1/K) by this much at the lower end of its
#: 95% interval to flag. Ring pixels are never perfectly free of the cell (blur and halo
#: beyond the dilation, neighbours at the corners, a cell's size moving the ring's inner
#: edge), so a faint legitimate signal is expected: on unconfounded LymphoSim 3.0 the ring
#: gives 0.54 [0.51, 0.56] on t4-vs-b (1,372 test crops) and 0.35 [0.32, 0.37] on 3 classes
#: (2,000 crops); the `confounded` preset gives 0.99 and 0.92. 10 points sits between.
RING_BACC_MARGIN = 0.10
#: Accuracy may fall by at most this many points when the ring is blanked (and the paired
#: interval must exclude 0 to flag). Blanking is itself a change of input: on LymphoSim
#: 3.0, whose background level varies from crop to crop (sd 16 grey levels), a global
#: background puts the cell on a background up to ~30 levels off its own, which cost a
#: cell-reading tiny-32 (t4-vs-b, 1,372 test crops) 4.8 points [3.4, 6.3]. Twice that
#: artefact is the bar; a model leaning on the background falls tens of points, to chance.
BLANK_DROP_POINTS = 10.0
THRESHOLDS: Mapping[str, float] = {"ring_bacc_margin": RING_BACC_MARGIN, "blank_drop_points": BLANK_DROP_POINTS}

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

# --- ring classifier ----------------------------------------------------------------------
CV_FOLDS = 5
DEFAULT_N_MAX = 2000  #: audited crops (stratified subsample): intervals of ~ +-2 points
N_BOOT = 1000
RING_FEATURES: tuple[str, ...] = (
    "mean", "std", "p05", "p25", "p50", "p75", "p95",
    "noise_std", "grad_mean", "grad_p90", "log_abs_mean", "tilt_vertical", "tilt_horizontal",
)
_PANEL_COLUMNS = 8
NOT_FLAGGED = "no sign that the model reads the background instead of the cell"


class AuditError(LymphosortError, ValueError):
    """The audit cannot run on this input (too few images, wrong shapes, class mismatch)."""


def _disc(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def _check_images(images: np.ndarray) -> np.ndarray:
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
    arr = _check_images(images).astype(np.float32)
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
    arr = _check_images(images).astype(np.float32)
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


def _ring_classifier(features: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Any]:
    """Cross-validated ring-only classifier: out-of-fold probabilities -> metrics with intervals."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from lymphosort.evaluate.metrics import classification_metrics

    present, y = np.unique(labels, return_inverse=True)
    # Gradient boosting: a session confound need not be monotone in any one feature (a class
    # recorded in the darkest and the brightest sessions); shallow trees and an L2 penalty
    # keep it from memorising a few hundred crops.
    clf = HistGradientBoostingClassifier(
        max_iter=150, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20, l2_regularization=1.0,
        random_state=seed,
    )
    cv = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed)
    probs = cross_val_predict(clf, features, y, cv=cv, method="predict_proba")
    m = classification_metrics(y, probs, n_boot=N_BOOT, seed=seed)
    counts = np.bincount(y)
    return {
        "features": list(RING_FEATURES),
        "classifier": "HistGradientBoostingClassifier(max_iter=150, max_leaf_nodes=15, min_samples_leaf=20, "
        "l2_regularization=1.0)",
        "cv": f"stratified {CV_FOLDS}-fold, shuffled, random_state={seed}",
        "classes_present": present.tolist(),
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "roc_auc": m["roc_auc"],
        "intervals": {k: m["intervals"][k] for k in ("accuracy", "balanced_accuracy", "roc_auc")},
        "chance_accuracy": float(counts.max() / counts.sum()),
        "chance_balanced_accuracy": 1.0 / len(present),
    }


def _acc(labels: np.ndarray, probs: np.ndarray, seed: int) -> dict[str, Any]:
    from lymphosort.evaluate.metrics import classification_metrics

    m = classification_metrics(labels, probs, n_boot=N_BOOT, seed=seed)
    return {
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "intervals": {k: m["intervals"][k] for k in ("accuracy", "balanced_accuracy")},
    }


def audit_images(
    images: np.ndarray,
    labels: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    *,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The audit on given crops: (results dict, arrays {masks, fallback, blanked} for figures).

    `predict` maps uint8 crops [N, H, W] to class probabilities [N, C]; `labels` are the
    model's class indices. Needs at least two classes with CV_FOLDS crops each.
    """
    from lymphosort.evaluate.metrics import paired_accuracy_difference

    imgs = _check_images(images)
    y = np.asarray(labels, dtype=np.int64).ravel()
    if y.shape[0] != imgs.shape[0]:
        raise AuditError(f"{imgs.shape[0]} images but {y.shape[0]} labels")
    present, counts = np.unique(y, return_counts=True)
    if len(present) < 2 or counts.min() < CV_FOLDS:
        have = ", ".join(f"class {c}: {k}" for c, k in zip(present.tolist(), counts.tolist())) or "none"
        raise AuditError(
            f"the audit needs at least 2 classes with >= {CV_FOLDS} images each "
            f"(for {CV_FOLDS}-fold cross-validation); got {len(y)} image(s) ({have})"
        )

    masks, fallback, radius = cell_masks(imgs)
    if fallback.mean() > 0.2:
        log.warning("cell segmentation failed on %.0f%% of crops; they use a centred disc of radius %.1f px",
                    100 * fallback.mean(), radius)
    probs = predict(imgs)
    if probs.ndim != 2 or probs.shape[0] != len(y) or y.max() >= probs.shape[1]:
        raise AuditError(f"predictions of shape {probs.shape} do not fit {len(y)} labels up to {y.max()}")
    as_is = _acc(y, probs, seed)
    variants: dict[str, dict[str, Any]] = {}
    for mode in BLANK_MODES:
        x, constant = blank_ring(imgs, masks, mode)
        p = predict(x)
        variants[mode] = _acc(y, p, seed)
        if mode == BLANK_MODES[0]:
            blanked, p_blank, blank_constant = x, p, constant
    diff = paired_accuracy_difference(y, [probs.argmax(1)], [p_blank.argmax(1)], n_boot=N_BOOT, seed=seed)
    ring = _ring_classifier(ring_features(imgs, masks), y, seed)

    drop_pts = 100.0 * diff["difference"]
    drop_low = 100.0 * diff["interval"][0]
    ring_low = ring["intervals"]["balanced_accuracy"][0]
    ring_bar = ring["chance_balanced_accuracy"] + RING_BACC_MARGIN
    reasons = []
    if ring_low > ring_bar:
        reasons.append(
            f"the background ring alone predicts the class: balanced accuracy {ring['balanced_accuracy']:.3f} "
            f"(95% low {ring_low:.3f} > chance {ring['chance_balanced_accuracy']:.3f} + {RING_BACC_MARGIN:.2f})"
        )
    if drop_pts > BLANK_DROP_POINTS and drop_low > 0:
        reasons.append(
            f"accuracy falls {drop_pts:.1f} points (95% [{drop_low:.1f}, {100 * diff['interval'][1]:.1f}]) when "
            f"the ring is blanked (> {BLANK_DROP_POINTS:g})"
        )
    cell_frac = masks.reshape(len(imgs), -1).mean(1)
    result: dict[str, Any] = {
        "flagged": bool(reasons),
        "reasons": reasons,
        "n": int(len(y)),
        "support": {int(c): int(k) for c, k in zip(present, counts)},
        "thresholds": dict(THRESHOLDS),
        "accuracy": {
            "as_is": as_is,
            "blanked": variants[BLANK_MODES[0]],
            "drop_points": drop_pts,
            "drop_interval_points": [100.0 * v for v in diff["interval"]],
            "blanked_variants": variants,
        },
        "ring_only": ring,
        "mask": {
            "method": "smoothed gradient magnitude | deviation from border level > "
            f"{EDGE_MADS:g} robust SD, centre component, convex hull + fitted circle, dilated {DILATE_PX} px",
            "fallback_count": int(fallback.sum()),
            "fallback_fraction": float(fallback.mean()),
            "fallback_radius_px": radius,
            "cell_fraction_median": float(np.median(cell_frac)),
            "ring_fraction_median": float(np.median(1.0 - cell_frac)),
        },
        "blanking": {
            "mode": BLANK_MODES[0],
            "constant": blank_constant,
            "why": "one constant (median ring grey level of the audited set) for every crop, so no crop keeps its "
            "own (possibly session-specific) background level; the cell is left as it is",
        },
    }
    return result, {"masks": masks, "fallback": fallback, "blanked": blanked}


# --- data ---------------------------------------------------------------------------------


def _folder_data(folder: PathLike, classes: Sequence[str], task: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Lab folder -> (images, labels in the run's classes, provenance).

    Subfolders named after the run's classes are read as such, unless some are named after
    on-disk classes the run does not use (T4, T8 for a B/T run): then the on-disk names are
    read and mapped by the task view (t4-vs-b: T4 -> T, T8 dropped).
    """
    from lymphosort.data.folder import load_folder
    from lymphosort.data.info import CLASSES, task_view
    from lymphosort.data.lymphomnist import task_labels
    from lymphosort.errors import DatasetNotFoundError

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder not found: {root}")
    subdirs = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    # On-disk names the run does not use (T4, T8 for a B/T model) mean: map through the task.
    on_disk_only = subdirs & (set(CLASSES) - set(classes))
    if subdirs & set(classes) and not on_disk_only:
        data = load_folder(root, classes=list(classes), progress=False)
        return data.images.numpy(), data.labels.numpy(), dict(data.provenance)
    if subdirs & set(CLASSES):
        data = load_folder(root, classes=list(CLASSES), progress=False)
        keep, mapped = task_labels(data.labels.numpy(), task_view(task))
        return data.images.numpy()[keep], mapped, {**data.provenance, "mapped_by_task": task}
    raise AuditError(
        f"{root}: no class subfolder named after the run's classes ({', '.join(classes)}) or the "
        f"LymphoMNIST classes ({', '.join(CLASSES)}); found: {', '.join(sorted(subdirs)) or 'none'}"
    )


def _subsample(labels: np.ndarray, n_max: int, seed: int) -> np.ndarray:
    """Row indices: all, or a stratified random n_max of them (sorted)."""
    if n_max < 1:
        raise AuditError(f"n_max must be >= 1, got {n_max}")
    if len(labels) <= n_max:
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    try:
        rows, _ = train_test_split(np.arange(len(labels)), train_size=n_max, stratify=labels, random_state=seed)
    except ValueError:  # a class too small to stratify: plain random rows
        rows = np.random.default_rng(seed).choice(len(labels), n_max, replace=False)
    return np.sort(rows)


def audit_run(
    run_dir: PathLike,
    data_root: PathLike | None,
    *,
    task: str | None = None,
    split: str = "test",
    out: PathLike | None = None,
    n_max: int = DEFAULT_N_MAX,
    seed: int = 0,
    data_folder: PathLike | None = None,
    split_version: str = "v1",
    device: str = "cpu",
) -> dict[str, Any]:
    """Confound audit of the run in `run_dir` on `split` of an IDX root, or on a lab folder.

    `task` defaults to the run's own (model.json). With `data_folder` (class subfolders) the
    folder is audited instead of `data_root` (images of other sizes resized to 64x64 as
    `load_folder` does). At most `n_max` crops (stratified, `seed`).
    Writes `audit.json`, `audit.md` and `audit.png` to `out` (default RUN/audit/TASK-SPLIT,
    SPLIT = "folder" for a lab folder) and returns the audit.json content plus `out`.
    """
    import torch

    from lymphosort.data.info import task_view
    from lymphosort.errors import ConfigError
    from lymphosort.evaluate.run import predict_proba
    from lymphosort.train.checkpoint import jsonable, load_checkpoint

    model, card = load_checkpoint(run_dir, map_location=device)
    task = task or card.task
    if not task:
        raise ConfigError(f"{run_dir}: model.json names no task; pass --task")
    view = task_view(task)
    if model.spec.num_classes != view.num_classes:
        raise ConfigError(
            f"model {card.model!r} has {model.spec.num_classes} outputs but task {task!r} has "
            f"{view.num_classes} classes ({', '.join(view.classes)})"
        )
    if data_folder is not None:
        images, labels, prov = _folder_data(data_folder, view.classes, task)
        split = "folder"
        data_info: dict[str, Any] = {**prov, "split": split}
    else:
        if data_root is None:
            raise ConfigError("give a data root (IDX files under ROOT/LymphoMNIST/raw) or a data folder")
        from lymphosort.data.lymphomnist import load_split

        data = load_split(data_root, split, task, split_version)
        images, labels = data.images.numpy(), data.labels.numpy()
        data_info = {**dict(data.provenance), "split": split, "split_id": data.split_id, "root": str(data_root)}
    rows = _subsample(labels, n_max, seed)
    data_info.update(n_available=int(len(labels)), n_audited=int(len(rows)))
    images, labels = np.ascontiguousarray(images[rows]), labels[rows]

    def predict(x: np.ndarray) -> np.ndarray:
        return predict_proba(model, torch.from_numpy(np.ascontiguousarray(x)), device=device)

    audit, arrays = audit_images(images, labels, predict, seed=seed)
    result: dict[str, Any] = {
        "flagged": audit.pop("flagged"),
        "reasons": audit.pop("reasons"),
        "run": str(run_dir),
        "model": card.model,
        "model_task": card.task,
        "model_data": dict(card.data),
        "task": task,
        "classes": list(view.classes),
        "data": data_info,
        "seed": int(seed),
        **audit,
    }
    out_dir = Path(out) if out is not None else Path(run_dir) / "audit" / f"{task}-{split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "audit.json").write_text(json.dumps(jsonable(result), indent=2, allow_nan=False) + "\n")
    (out_dir / "audit.md").write_text(_markdown(result))
    _plot(images, labels, arrays, list(view.classes), out_dir / "audit.png", seed)
    result["out"] = str(out_dir)
    return result


# --- reports ------------------------------------------------------------------------------


def _iv(pair: Sequence[float] | None, scale: float = 1.0, fmt: str = ".3f") -> str:
    return f"[{pair[0] * scale:{fmt}}, {pair[1] * scale:{fmt}}]" if pair else ""


def _markdown(r: Mapping[str, Any]) -> str:
    a, ring, mask = r["accuracy"], r["ring_only"], r["mask"]
    verdict = "**FLAGGED**: " + "; ".join(r["reasons"]) if r["flagged"] else f"**not flagged**: {NOT_FLAGGED}"
    rows = [
        f"# Confound audit: {r['model']} on {r['task']} ({r['data'].get('split')}, n={r['n']})",
        "",
        verdict,
        "",
        "| measure | value | 95% interval |",
        "|---|---|---|",
        f"| accuracy as is | {a['as_is']['accuracy']:.3f} | {_iv(a['as_is']['intervals']['accuracy'])} |",
        f"| accuracy, ring blanked ({r['blanking']['mode']}, constant {r['blanking']['constant']:.0f}) | "
        f"{a['blanked']['accuracy']:.3f} | {_iv(a['blanked']['intervals']['accuracy'])} |",
        *(
            f"| (diagnostic) ring blanked, {mode} | {v['accuracy']:.3f} | {_iv(v['intervals']['accuracy'])} |"
            for mode, v in a["blanked_variants"].items() if mode != r["blanking"]["mode"]
        ),
        f"| drop when blanked (points) | {a['drop_points']:.1f} | {_iv(a['drop_interval_points'], fmt='.1f')} |",
        f"| ring-only balanced accuracy | {ring['balanced_accuracy']:.3f} | "
        f"{_iv(ring['intervals']['balanced_accuracy'])} |",
        f"| ring-only accuracy (chance {ring['chance_accuracy']:.3f}) | {ring['accuracy']:.3f} | "
        f"{_iv(ring['intervals']['accuracy'])} |",
        "",
        f"Thresholds: flag when the ring-only balanced accuracy's lower bound exceeds chance "
        f"({ring['chance_balanced_accuracy']:.3f}) + {r['thresholds']['ring_bacc_margin']:.2f}, or accuracy falls "
        f"more than {r['thresholds']['blank_drop_points']:g} points (interval above 0) when the ring is blanked.",
        f"Cell masks: {mask['method']}; {mask['fallback_count']} of {r['n']} crops fell back to a centred disc "
        f"(r = {mask['fallback_radius_px']:.1f} px); median cell share {mask['cell_fraction_median']:.2f}.",
        f"Ring classifier: {ring['classifier']}, {ring['cv']}, on {len(ring['features'])} features "
        f"({', '.join(ring['features'])}).",
        "",
        "![crops, masks and blanked crops](audit.png)",
        "",
    ]
    return "\n".join(rows)


def _plot(
    images: np.ndarray, labels: np.ndarray, arrays: Mapping[str, np.ndarray], classes: list[str], path: Path, seed: int
) -> None:
    """Columns: a few crops per class; rows: crop, crop with mask outline, blanked crop."""
    from matplotlib.figure import Figure

    from lymphosort.evaluate.plots import save_figure

    rng = np.random.default_rng(seed)
    present = np.unique(labels)
    per = max(1, _PANEL_COLUMNS // len(present))
    cols = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in present])
    fig = Figure(figsize=(1.3 * len(cols), 4.2))
    axes = fig.subplots(3, len(cols), squeeze=False)
    for j, i in enumerate(cols):
        name = classes[labels[i]] if labels[i] < len(classes) else str(labels[i])
        fb = " (disc)" if arrays["fallback"][i] else ""
        for row, (img, title) in enumerate(
            ((images[i], name), (images[i], f"mask{fb}"), (arrays["blanked"][i], "blanked"))
        ):
            ax = axes[row, j]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if row == 1:
                ax.contour(arrays["masks"][i], levels=[0.5], colors="#ff7f0e", linewidths=0.8)
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
    fig.tight_layout()
    save_figure(fig, path)

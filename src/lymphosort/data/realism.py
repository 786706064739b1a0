"""Realism measured, not eyeballed: compare two sets of lymphocyte crops.

``compare_sets`` puts two image sets side by side (real LymphoMNIST crops, a lab's own
folder, an IDX root, or a LymphoSim preset): the appearance statistics of
``../shared/reference/lymphomnist`` per set, a montage, and a "set A vs set B"
discriminator (cross-validated ROC-AUC; 0.5 = the sets cannot be told apart). The same
command shows a user the domain shift between their microscope and a model's training data
before they trust its predictions.

Statistics (``crop_appearance``) reproduce the reference's measurement: the rim statistics,
background and grey std match ``crops/manifest.csv`` exactly when given the manifest's circle;
the circle fit is our own and agrees to ~0.35 px in diameter on average (``tests/data/test_realism.py``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
from scipy import ndimage, optimize, stats

from lymphosort.errors import ConfigError, DatasetNotFoundError

__all__ = [
    "APPEARANCE_DOC",
    "FEATURE_DOC",
    "MIN_IMAGES",
    "TABLE_STATS",
    "ImageSet",
    "compare_sets",
    "crop_appearance",
    "crop_features",
    "discriminate",
    "load_image_set",
    "resample_set",
]

log = logging.getLogger(__name__)

#: Statistic -> meaning; the keys ``crop_appearance`` returns (names follow manifest.csv).
APPEARANCE_DOC: dict[str, str] = {
    "crop_side": "crop side in px (the shorter side; crops are square-ish)",
    "diam_px": "fitted outer cell diameter (px): 90 rays from the crop centre; on each, the outermost "
    "gradient-magnitude peak (Gaussian sigma 1) of at least half the ray's strongest, moved outward to "
    "where the response falls to half that peak; RANSAC circle through those points, least-squares refit",
    "diam_frac": "diam_px / crop_side",
    "centre_x": "fitted circle centre x (px, pixel-index coordinates)",
    "centre_y": "fitted circle centre y (px, pixel-index coordinates, downward)",
    "circle_inliers": "rays whose edge point lies within 3 px of the fitted circle",
    "circle_rays": "rays cast",
    "bg_median_ring3": "background: median grey level of the 3 px border ring",
    "grey_std": "grey-level std of the whole crop",
    "relief_ul_minus_lr": "rim relief: mean grey of the rim (0.8-1.1 R) in the upper-left half-plane minus "
    "the lower-right half-plane (split along the anti-diagonal through the centre); negative = bright lower right",
    "rim_h1_amp": "amplitude of the first angular harmonic of rim grey level (least squares a + b cos t + c sin t "
    "over the rim pixels)",
    "rim_bright_dir_deg": "direction of the brightest rim from that harmonic, degrees in image coordinates "
    "(0 = +x, +90 = +y i.e. down; lower right = +45)",
    "interior_std": "grey std inside the inner disc (r < 0.7 R): the granular texture's strength",
    "texture_low": "fraction of inner-disc power at 1/16-1/8 cycles/px (Hann-windowed FFT, mean removed)",
    "texture_mid": "fraction of inner-disc power at 1/8-1/4 cycles/px",
    "texture_high": "fraction of inner-disc power at 1/4-1/2 cycles/px (fine granules and noise)",
}

#: The statistics of the side-by-side table, in order (all of ``APPEARANCE_DOC`` but geometry bookkeeping).
TABLE_STATS: tuple[str, ...] = (
    "crop_side", "diam_px", "diam_frac", "bg_median_ring3", "grey_std", "relief_ul_minus_lr",
    "rim_h1_amp", "rim_bright_dir_deg", "interior_std", "texture_low", "texture_mid", "texture_high",
)
_ANGLES = frozenset({"rim_bright_dir_deg"})

_N_RAYS = 90
_EDGE_SIGMA = 1.0  # px; calibrated on the 64 reference crops (diameter MAE ~0.35 px)
_INLIER_TOL = 3.0  # px; with _EDGE_SIGMA, the best agreement with manifest.csv
_RIM = (0.8, 1.1)  # rim annulus in units of R: reproduces manifest.csv's rim statistics exactly
_INNER = 0.7  # inner disc radius / R for texture: clear of the rim's relief
_BANDS = {"texture_low": (1 / 16, 1 / 8), "texture_mid": (1 / 8, 1 / 4), "texture_high": (1 / 4, 0.5 + 1e-9)}
_MIN_INLIERS = 12  # fewer rays on one circle: no cell found, cell statistics are NaN

#: Fewest images a set must have: the discriminator's CV needs a few per fold.
MIN_IMAGES = 4
#: Smallest side (px) a crop may have and still hold a measurable cell.
MIN_SIDE = 24
#: Largest long/short side ratio still read as a (square-ish) crop; the long side is centre-cropped.
MAX_ASPECT = 1.25


# --------------------------------------------------------------------------- one crop


def _circle_from_points(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Algebraic (Kasa) least-squares circle: (cx, cy, r)."""
    a = np.c_[x, y, np.ones_like(x)]
    (p, q, c), *_ = np.linalg.lstsq(a, x * x + y * y, rcond=None)
    cx, cy = p / 2, q / 2
    return float(cx), float(cy), float(np.sqrt(max(c + cx * cx + cy * cy, 0.0)))


def _ransac_circle(x: np.ndarray, y: np.ndarray, tol: float, trials: int = 300) -> np.ndarray:
    """Inlier mask of the circle through 3 edge points that most points agree with.

    Fixed seed: the statistics of a crop must not change between calls.
    """
    rng = np.random.default_rng(0)
    idx = np.array([rng.choice(x.size, 3, replace=False) for _ in range(trials)])
    ax, ay = x[idx[:, 0]], y[idx[:, 0]]
    bx, by = x[idx[:, 1]], y[idx[:, 1]]
    cx, cy = x[idx[:, 2]], y[idx[:, 2]]
    # circumcentre of each triple; collinear triples get d ~ 0 and are dropped
    d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    ok = np.abs(d) > 1e-9
    d = np.where(ok, d, 1.0)
    ux = ((ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)) / d
    uy = ((ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)) / d
    r = np.hypot(ax - ux, ay - uy)
    resid = np.abs(np.hypot(x[None] - ux[:, None], y[None] - uy[:, None]) - r[:, None])
    votes = np.where(ok, (resid < tol).sum(1), -1)
    return resid[int(np.argmax(votes))] < tol


def _ray_edges(grad: np.ndarray, x0: float, y0: float) -> tuple[np.ndarray, np.ndarray]:
    """Outer edge point (x, y) on each of ``_N_RAYS`` rays from (x0, y0)."""
    n = min(grad.shape)
    theta = np.arange(_N_RAYS) * (2 * np.pi / _N_RAYS)
    step = 0.25
    rs = np.arange(0.08 * n, 0.5 * n, step)
    xs = x0 + np.cos(theta)[:, None] * rs
    ys = y0 + np.sin(theta)[:, None] * rs
    prof = ndimage.map_coordinates(grad, [ys, xs], order=1, mode="nearest")
    peak = prof.max(axis=1, keepdims=True)
    # the outermost strong local maximum: the cell/background boundary, not the inner
    # dark/bright relief edge, which is often the strongest on the bright side
    inner = prof[:, 1:-1]
    local = (inner >= prof[:, :-2]) & (inner >= prof[:, 2:]) & (inner >= 0.5 * peak)
    local = np.pad(local, ((0, 0), (1, 1)))
    has = local.any(axis=1)
    last = prof.shape[1] - 1 - np.argmax(local[:, ::-1], axis=1)
    k = np.where(has, last, np.argmax(prof, axis=1))
    top = prof[np.arange(_N_RAYS), k]
    # outward to half the peak (the edge's outer half-maximum = the outer diameter)
    j_idx = np.arange(prof.shape[1])[None]
    below = (j_idx > k[:, None]) & (prof <= 0.5 * top[:, None])
    found = below.any(axis=1)
    j = np.where(found, np.argmax(below, axis=1), prof.shape[1] - 1)
    a = prof[np.arange(_N_RAYS), np.maximum(j - 1, 0)]
    b = prof[np.arange(_N_RAYS), j]
    t = np.where(found & (a > b), (a - 0.5 * top) / np.where(a > b, a - b, 1.0), 0.0)
    r = rs[np.maximum(j - 1, 0)] + np.clip(t, 0, 1) * step
    return x0 + np.cos(theta) * r, y0 + np.sin(theta) * r


def _fit_circle(img: np.ndarray) -> tuple[float, float, float, int]:
    """(cx, cy, radius, inliers) of the cell outline; radius NaN if no circle is found."""
    h, w = img.shape
    grad = ndimage.gaussian_gradient_magnitude(img, _EDGE_SIGMA)
    if float(grad.max()) < 1e-6:  # flat crop: nothing to fit
        return float("nan"), float("nan"), float("nan"), 0
    ex, ey = _ray_edges(grad, (w - 1) / 2, (h - 1) / 2)
    inl = _ransac_circle(ex, ey, _INLIER_TOL)
    if inl.sum() < _MIN_INLIERS:
        return float("nan"), float("nan"), float("nan"), int(inl.sum())
    start = _circle_from_points(ex[inl], ey[inl])
    # geometric refit on the inliers: the algebraic fit is biased for partial arcs
    fit = optimize.least_squares(lambda q: np.hypot(ex[inl] - q[0], ey[inl] - q[1]) - q[2], start)
    cx, cy, r = (float(v) for v in fit.x)
    n_in = int((np.abs(np.hypot(ex - cx, ey - cy) - r) < _INLIER_TOL).sum())
    return cx, cy, abs(r), n_in


def _square(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ConfigError(f"a crop must be a 2-D grey image, got shape {img.shape}")
    h, w = img.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top : top + s, left : left + s]


def _polar(shape: tuple[int, int], cx: float, cy: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dx, dy = xx - cx, yy - cy
    return dx, dy, np.hypot(dx, dy), np.arctan2(dy, dx)


def _texture(img: np.ndarray, rr: np.ndarray, radius: float) -> dict[str, float]:
    """Band power fractions of the inner disc; a radial Hann window tapers it to zero at its edge."""
    rin = _INNER * radius
    disc = rr < rin
    if disc.sum() < 16:
        return {k: float("nan") for k in ("interior_std", *_BANDS)}
    ys, xs = np.nonzero(disc)
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    patch, r = img[sl], rr[sl]
    window = np.where(r < rin, 0.5 * (1 + np.cos(np.pi * r / rin)), 0.0)
    vals = patch[r < rin]
    x = (patch - np.average(patch, weights=window)) * window
    power = np.abs(np.fft.fft2(x)) ** 2
    fy = np.fft.fftfreq(patch.shape[0])[:, None]
    fx = np.fft.fftfreq(patch.shape[1])[None]
    f = np.hypot(fy, fx)
    total = power[f > 0].sum()
    out = {"interior_std": float(vals.std())}
    for k, (lo, hi) in _BANDS.items():
        out[k] = float(power[(f >= lo) & (f < hi)].sum() / total) if total > 0 else float("nan")
    return out


def crop_appearance(image: np.ndarray) -> dict[str, float]:
    """The reference's appearance statistics of one grey crop of any square size; see ``APPEARANCE_DOC``.

    Cell statistics are NaN when no cell outline is found (fewer than 12 rays on one circle).
    A non-square crop is centre-cropped to its shorter side first.
    """
    img = _square(image)
    side = img.shape[0]
    ring = np.ones_like(img, dtype=bool)
    ring[3:-3, 3:-3] = False
    out: dict[str, float] = {
        "crop_side": float(side),
        "bg_median_ring3": float(np.median(img[ring])),
        "grey_std": float(img.std()),
        "circle_rays": float(_N_RAYS),
    }
    cx, cy, radius, n_in = _fit_circle(img)
    out.update(centre_x=cx, centre_y=cy, circle_inliers=float(n_in), diam_px=2 * radius, diam_frac=2 * radius / side)
    out.update(_rim_and_texture(img, cx, cy, radius))
    return {k: out[k] for k in APPEARANCE_DOC}


def _rim_and_texture(img: np.ndarray, cx: float, cy: float, radius: float) -> dict[str, float]:
    keys = ("relief_ul_minus_lr", "rim_h1_amp", "rim_bright_dir_deg", "interior_std", *_BANDS)
    if not np.isfinite(radius):
        return {k: float("nan") for k in keys}
    dx, dy, rr, th = _polar(img.shape, cx, cy)
    rim = (rr >= _RIM[0] * radius) & (rr <= _RIM[1] * radius)
    v, t = img[rim], th[rim]
    side = (dx + dy)[rim]  # < 0: upper-left half-plane, > 0: lower-right
    ul, lr = v[side < 0], v[side > 0]
    relief = float(ul.mean() - lr.mean()) if ul.size and lr.size else float("nan")
    design = np.c_[np.ones_like(t), np.cos(t), np.sin(t)]
    _, c, s = np.linalg.lstsq(design, v, rcond=None)[0]
    out = {
        "relief_ul_minus_lr": relief,
        "rim_h1_amp": float(np.hypot(c, s)),
        "rim_bright_dir_deg": float(np.degrees(np.arctan2(s, c))),
    }
    out.update(_texture(img, rr, radius))
    return out


# --------------------------------------------------------------------------- discriminator features

_PROFILE_EDGES = np.round(np.arange(0.0, 1.41, 0.2), 2)  # radial bins in units of R

#: Discriminator feature -> meaning, in vector order (fixed: the AUC is comparable across runs).
FEATURE_DOC: dict[str, str] = {
    "diam_px": APPEARANCE_DOC["diam_px"],
    "diam_frac": APPEARANCE_DOC["diam_frac"],
    "centre_offset": "distance of the fitted centre from the crop centre, / crop side",
    "inlier_frac": "circle_inliers / circle_rays: how circular the outline is",
    "bg_median_ring3": APPEARANCE_DOC["bg_median_ring3"],
    "grey_std": APPEARANCE_DOC["grey_std"],
    "relief_ul_minus_lr": APPEARANCE_DOC["relief_ul_minus_lr"],
    "rim_h1_x": "rim first harmonic, x component (amp * cos direction)",
    "rim_h1_y": "rim first harmonic, y component (amp * sin direction)",
    "interior_std": APPEARANCE_DOC["interior_std"],
    "texture_low": APPEARANCE_DOC["texture_low"],
    "texture_mid": APPEARANCE_DOC["texture_mid"],
    "texture_high": APPEARANCE_DOC["texture_high"],
    **{
        f"profile_{lo:.1f}_{hi:.1f}": f"mean grey at {lo:.1f}-{hi:.1f} R from the centre minus the background"
        for lo, hi in zip(_PROFILE_EDGES[:-1], _PROFILE_EDGES[1:])
    },
    "grad_inside": "mean gradient magnitude (sigma 1) inside 0.8 R",
    "grad_rim": "mean gradient magnitude on the rim (0.8-1.1 R)",
    "grad_outside": "mean gradient magnitude beyond 1.2 R (background texture, noise, neighbours)",
    "noise_hf": "std of the image minus its Gaussian (sigma 1) blur over the background beyond 1.2 R",
    "dark_p05": "5th grey percentile minus the background",
    "bright_p95": "95th grey percentile minus the background",
}


def crop_features(image: np.ndarray, appearance: dict[str, float] | None = None) -> np.ndarray:
    """The discriminator's feature vector of one crop (``FEATURE_DOC`` order; NaN where undefined).

    ``appearance``: this crop's ``crop_appearance`` if already measured.
    """
    img = _square(image)
    st = crop_appearance(img) if appearance is None else appearance
    side = img.shape[0]
    bg = st["bg_median_ring3"]
    cx, cy, radius = st["centre_x"], st["centre_y"], st["diam_px"] / 2
    f: dict[str, float] = {k: st[k] for k in FEATURE_DOC if k in st}
    f["centre_offset"] = float(np.hypot(cx - (side - 1) / 2, cy - (side - 1) / 2) / side)
    f["inlier_frac"] = st["circle_inliers"] / st["circle_rays"]
    ang = np.radians(st["rim_bright_dir_deg"])
    f["rim_h1_x"] = st["rim_h1_amp"] * float(np.cos(ang))
    f["rim_h1_y"] = st["rim_h1_amp"] * float(np.sin(ang))
    grad = ndimage.gaussian_gradient_magnitude(img, 1.0)
    hf = img - ndimage.gaussian_filter(img, 1.0)
    nan = float("nan")
    if np.isfinite(radius):
        rr = _polar(img.shape, cx, cy)[2] / radius
        for lo, hi in zip(_PROFILE_EDGES[:-1], _PROFILE_EDGES[1:]):
            m = (rr >= lo) & (rr < hi)
            f[f"profile_{lo:.1f}_{hi:.1f}"] = float(img[m].mean() - bg) if m.any() else nan
        out = rr > 1.2
        f["grad_inside"] = float(grad[rr < 0.8].mean())
        f["grad_rim"] = float(grad[(rr >= 0.8) & (rr <= 1.1)].mean())
        f["grad_outside"] = float(grad[out].mean()) if out.any() else nan
        f["noise_hf"] = float(hf[out].std()) if out.any() else nan
    f["dark_p05"] = float(np.percentile(img, 5) - bg)
    f["bright_p95"] = float(np.percentile(img, 95) - bg)
    return np.array([f.get(k, nan) for k in FEATURE_DOC], dtype=np.float64)


def discriminate(
    feats_a: np.ndarray, feats_b: np.ndarray, *, seed: int = 0, folds: int = 5, n_boot: int = 1000
) -> dict[str, Any]:
    """Cross-validated ROC-AUC of "A vs B" with a 95% bootstrap interval (0.5 = indistinguishable).

    The larger set is subsampled (seeded) to the smaller's size so that chance stays 0.5.
    Classifier: median imputation, standardisation, L2 logistic regression (C=1) - a fixed,
    low-variance model, so the AUC measures the sets rather than the classifier's tuning.
    The interval resamples the out-of-fold predictions; it holds the test-set noise, not the
    variation between CV splits.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    m = min(len(feats_a), len(feats_b))
    if m < MIN_IMAGES:
        raise ConfigError(f"the discriminator needs at least {MIN_IMAGES} crops per set, got {m}")
    a = feats_a[np.sort(rng.choice(len(feats_a), m, replace=False))]
    b = feats_b[np.sort(rng.choice(len(feats_b), m, replace=False))]
    x = np.vstack([a, b])
    y = np.r_[np.zeros(m, int), np.ones(m, int)]
    # a feature undefined in every crop (e.g. no cell found anywhere) carries no information
    keep = np.isfinite(x).any(axis=0)
    x = x[:, keep]
    k = min(folds, m)
    model = make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)
    )
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    p = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, p))
    # resample each set on its own so that every resample has both classes; the AUC of each
    # resample is the Mann-Whitney U from tied ranks (all resamples in one vectorised call)
    pa = p[:m][rng.integers(0, m, (n_boot, m))]
    pb = p[m:][rng.integers(0, m, (n_boot, m))]
    ranks = stats.rankdata(np.concatenate([pa, pb], axis=1), axis=1)
    boots = (ranks[:, m:].sum(axis=1) - m * (m + 1) / 2) / (m * m)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {
        "auc": auc,
        "ci95": [float(lo), float(hi)],
        "n_per_set": m,
        "folds": k,
        "model": "median impute + StandardScaler + LogisticRegression(C=1), StratifiedKFold(shuffle)",
        "interval": f"percentile bootstrap of the out-of-fold predictions ({n_boot} resamples, per set)",
        "features": [name for name, kept in zip(FEATURE_DOC, keep) if kept],
    }


# --------------------------------------------------------------------------- loading sets


class ImageSet(NamedTuple):
    """A set of grey crops: images (uint8, each square-ish, sizes may differ), labels or None, description."""

    images: list[np.ndarray]
    labels: np.ndarray | None
    description: str


def _idx_root(path: Path) -> Path | None:
    """The data root when ``path`` is a LymphoMNIST root, its ``LymphoMNIST/`` or its ``raw/`` folder."""
    from lymphosort.data import lymphomnist as lm

    candidates = [path]
    if path.name == "LymphoMNIST":
        candidates.append(path.parent)
    if path.name == "raw" and path.parent.name == "LymphoMNIST":
        candidates.append(path.parent.parent)
    for root in candidates:
        if lm.raw_folder(root).is_dir() and any(p.exists() for p in lm.raw_files(root).values()):
            return root
    return None


def _read_crop(path: Path) -> np.ndarray:
    """One file at its own size, square (long side centre-cropped), via the lab-folder pixel rules."""
    from PIL import Image

    from lymphosort.data.folder import FolderDataError, read_image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:  # noqa: BLE001 - any decoder failure is "unreadable"
        raise ConfigError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    if min(w, h) < MIN_SIDE:
        raise ConfigError(f"{path}: {w}x{h} px is too small for a cell crop (need at least {MIN_SIDE} px a side)")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ConfigError(f"{path}: {w}x{h} px is not a square-ish crop (sides differ by more than {MAX_ASPECT}x)")
    try:
        return read_image(path, size=min(w, h), mode="center-crop")
    except FolderDataError as e:
        raise ConfigError(str(e)) from None


def _load_folder(path: Path, n: int, rng: np.random.Generator) -> ImageSet:
    from lymphosort.data.folder import IMAGE_EXTENSIONS

    files = sorted(
        f for f in path.rglob("*")
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in f.relative_to(path).parts)
    )
    if not files:
        raise ConfigError(f"{path}: no image files (readable: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if len(files) < MIN_IMAGES:
        raise ConfigError(f"{path}: {len(files)} image(s), too few to compare (need at least {MIN_IMAGES})")
    if len(files) > n:
        files = [files[i] for i in np.sort(rng.choice(len(files), n, replace=False))]
    images = [_read_crop(f) for f in files]
    sides = sorted({im.shape[0] for im in images})
    size = f"{sides[0]} px" if len(sides) == 1 else f"{sides[0]}-{sides[-1]} px"
    return ImageSet(images, None, f"folder {path} ({len(images)} crops, {size})")


def _load_idx(root: Path, n: int, rng: np.random.Generator) -> ImageSet:
    from lymphosort.data import lymphomnist as lm

    images, labels = lm.read_raw(root, train=False)
    if len(labels) < MIN_IMAGES:
        raise ConfigError(f"{root}: {len(labels)} test image(s), too few to compare (need at least {MIN_IMAGES})")
    rows = np.sort(rng.choice(len(labels), min(n, len(labels)), replace=False))
    src = lm.read_provenance(root).get("source", "?")
    return ImageSet(
        [np.asarray(images[i]) for i in rows],
        np.asarray(labels)[rows].astype(np.int64),
        f"IDX root {root} (test file, {len(rows)} crops, {src})",
    )


def load_image_set(spec: str, n: int, seed: int) -> ImageSet:
    """Up to ``n`` crops (seeded draw) from a folder of images, an IDX root, or ``sim:PRESET``.

    A folder is searched recursively for PNG/TIFF/JPEG/BMP files of any square-ish size and
    bit depth (read by ``lymphosort.data.folder`` rules, kept at their own size); an IDX root
    holds ``LymphoMNIST/raw/*`` (its test file is used); ``sim:PRESET`` renders ``n`` LymphoSim
    crops. Raises ``ConfigError`` (or ``DatasetNotFoundError`` for a missing path) with one
    sentence on bad input.
    """
    if n < MIN_IMAGES:
        raise ConfigError(f"--n must be at least {MIN_IMAGES} to compare sets, got {n}")
    rng = np.random.default_rng(seed)
    if spec.startswith("sim:"):
        from lymphosort.data.synth import get_preset, render_crops

        name = spec[4:]
        get_preset(name)  # ConfigError naming the presets
        images, labels, _ = render_crops(n, seed=seed, preset=name)
        return ImageSet(list(images), labels, f"LymphoSim preset {name} ({n} crops, {images.shape[-1]} px, seed {seed})")
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"{spec}: no such folder (give an image folder, an IDX root or sim:PRESET)")
    if not path.is_dir():
        raise ConfigError(f"{spec}: not a folder (give an image folder, an IDX root or sim:PRESET)")
    root = _idx_root(path)
    if root is not None:
        return _load_idx(root, n, rng)
    return _load_folder(path, n, rng)


# --------------------------------------------------------------------------- like with like


def _side(images: Sequence[np.ndarray]) -> int:
    return int(np.median([im.shape[0] for im in images]))


def resample_set(images: Sequence[np.ndarray], side: int) -> list[np.ndarray]:
    """Every crop not already ``side`` px resized to it smoothly (Pillow bicubic, antialiased when shrinking).

    The reference crops were smoothly resampled from a mosaic, which softens edges and
    texture; a sharper set would differ from them for that reason alone.
    """
    from PIL import Image

    out = []
    for im in images:
        if im.shape == (side, side):
            out.append(im)
            continue
        f = Image.fromarray(np.asarray(im, dtype=np.float32)).resize((side, side), Image.Resampling.BICUBIC)
        out.append(np.clip(np.rint(np.asarray(f)), 0, 255).astype(np.uint8))
    return out


# --------------------------------------------------------------------------- compare


def _summary(values: np.ndarray, angle: bool) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    if angle:  # circular mean and sd: directions wrap at +-180
        z = np.exp(1j * np.radians(v)).mean()
        sd = np.degrees(np.sqrt(-2 * np.log(max(abs(z), 1e-12))))
        return {"mean": float(np.degrees(np.angle(z))), "sd": float(sd), "n": int(v.size)}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def _within(a: dict[str, float], b: dict[str, float], angle: bool) -> bool | None:
    if not (np.isfinite(a["mean"]) and np.isfinite(b["mean"])):
        return None
    d = b["mean"] - a["mean"]
    if angle:
        d = (d + 180.0) % 360.0 - 180.0
    return bool(abs(d) <= a["sd"] + 1e-9)


def _fmt(v: float) -> str:
    return "nan" if not np.isfinite(v) else (f"{v:.3f}" if abs(v) < 1 else f"{v:.1f}")


def _markdown(result: dict[str, Any]) -> str:
    a, b = result["a"], result["b"]
    lines = [
        f"A: {a['description']}",
        f"B: {b['description']}",
        f"like with like: {result['resample']}",
        "",
        "| statistic | A mean | A sd | B mean | B sd | B within 1 sd of A |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for name, s in result["statistics"].items():
        w = {True: "yes", False: "no", None: "-"}[s["b_within_1sd_of_a"]]
        lines.append(
            f"| {name} | {_fmt(s['a']['mean'])} | {_fmt(s['a']['sd'])} | {_fmt(s['b']['mean'])} "
            f"| {_fmt(s['b']['sd'])} | {w} |"
        )
    d = result["discriminator"]
    lines += [
        "",
        f"discriminator A vs B: ROC-AUC {d['auc']:.3f} (95% interval {d['ci95'][0]:.3f}-{d['ci95'][1]:.3f}; "
        f"{d['n_per_set']} crops per set, {d['folds']}-fold CV; 0.5 = indistinguishable)",
    ]
    return "\n".join(lines) + "\n"


def _mosaic(images: Sequence[np.ndarray], cols: int, tile: int) -> np.ndarray:
    rows = -(-len(images) // cols)
    pad = 2
    out = np.full((rows * (tile + pad) + pad, cols * (tile + pad) + pad), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        h, w = im.shape
        y = pad + r * (tile + pad) + (tile - h) // 2
        x = pad + c * (tile + pad) + (tile - w) // 2
        out[y : y + h, x : x + w] = im
    return out


def _montage(a: ImageSet, b: ImageSet, out: Path, seed: int, per_set: int = 32, cols: int = 8) -> Path:
    """PNG: a grid of A's crops beside a grid of B's (seeded pick), class names where known."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lymphosort.data.info import CLASSES

    rng = np.random.default_rng(seed)
    picks = [np.sort(rng.choice(len(s.images), min(per_set, len(s.images)), replace=False)) for s in (a, b)]
    tile = max(im.shape[0] for s in (a, b) for im in s.images)
    fig = Figure(figsize=(14, 4.6))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(wspace=0.04)
    for k, (s, pick, tag) in enumerate(zip((a, b), picks, "AB")):
        ax: Any = fig.add_subplot(1, 2, k + 1)
        ax.imshow(_mosaic([s.images[i] for i in pick], cols, tile), cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        title = s.description if len(s.description) < 70 else s.description[:67] + "..."
        ax.set_title(f"{tag}: {title}", fontsize=8)
        if s.labels is not None:
            for j, i in enumerate(pick):
                r, c = divmod(j, cols)
                name = CLASSES[int(s.labels[i])] if 0 <= int(s.labels[i]) < len(CLASSES) else str(s.labels[i])
                ax.text(2 + c * (tile + 2) + 2, 2 + r * (tile + 2) + 2, name, color="yellow", fontsize=6, va="top")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    return out


def compare_sets(
    a: str | ImageSet,
    b: str | ImageSet,
    out_dir: str | os.PathLike[str],
    *,
    n: int = 512,
    seed: int = 0,
    resample: bool = True,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Compare set B against reference set A; writes compare.json, compare.md, montage.png to ``out_dir``.

    ``a``/``b``: a spec for ``load_image_set`` or a loaded ``ImageSet``. With ``resample``
    (the default) every crop whose side differs from A's (median) side is resampled smoothly
    to it before anything is measured; the output says so. Returns the JSON's content.
    """
    specs = {}
    sets = []
    for tag, s, k in (("a", a, 0), ("b", b, 1)):
        specs[tag] = s if isinstance(s, str) else None
        # seed + k: "sim:X sim:X" compares two independent draws, not one set with itself
        loaded = load_image_set(s, n, seed + k) if isinstance(s, str) else s
        if len(loaded.images) < MIN_IMAGES:
            raise ConfigError(f"set {tag.upper()} has {len(loaded.images)} crop(s), too few to compare (need {MIN_IMAGES})")
        sets.append(loaded)
    set_a, set_b = sets
    native = {tag: sorted({int(im.shape[0]) for im in s.images}) for tag, s in zip("ab", sets)}
    side = _side(set_a.images)
    note = "off (--no-resample): each set measured at its own crop size"
    if resample:
        changed = {tag: sum(im.shape[0] != side for im in s.images) for tag, s in zip("ab", sets)}
        if any(changed.values()):
            set_a = set_a._replace(images=resample_set(set_a.images, side))
            set_b = set_b._replace(images=resample_set(set_b.images, side))
            moved = ", ".join(f"{changed[t]} {t.upper()} crops ({', '.join(map(str, native[t]))} px)" for t in "ab" if changed[t])
            note = f"{moved} resampled smoothly (bicubic, antialiased) to A's {side} px side before measuring"
        else:
            note = f"not needed: both sets are {side} px"
    log.info("measuring %d + %d crops", len(set_a.images), len(set_b.images))
    measured = [[crop_appearance(im) for im in s.images] for s in (set_a, set_b)]
    feats = [
        np.stack([crop_features(im, st) for im, st in zip(s.images, sts)]) for s, sts in zip((set_a, set_b), measured)
    ]
    table: dict[str, Any] = {}
    for name in TABLE_STATS:
        angle = name in _ANGLES
        sa, sb = (_summary(np.array([r[name] for r in sts]), angle) for sts in measured)
        table[name] = {"doc": APPEARANCE_DOC[name], "a": sa, "b": sb, "b_within_1sd_of_a": _within(sa, sb, angle)}
    found = [float(np.mean([np.isfinite(r["diam_px"]) for r in sts])) for sts in measured]
    result: dict[str, Any] = {
        "a": {"spec": specs["a"], "description": set_a.description, "n": len(set_a.images),
              "native_sides": native["a"], "cell_found_frac": found[0]},
        "b": {"spec": specs["b"], "description": set_b.description, "n": len(set_b.images),
              "native_sides": native["b"], "cell_found_frac": found[1]},
        "seed": seed,
        "resample": note,
        "statistics": table,
        "discriminator": discriminate(feats[0], feats[1], seed=seed, n_boot=n_boot),
        "feature_doc": FEATURE_DOC,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "compare.json", "md": out / "compare.md", "montage": out / "montage.png"}
    result["files"] = {k: str(v) for k, v in files.items()}
    _montage(set_a, set_b, files["montage"], seed)
    files["md"].write_text(_markdown(result))
    files["json"].write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    return result


"""Appearance of one lymphocyte crop, measured as the reference measures it.

``crop_appearance`` reproduces the statistics of ``../shared/reference/lymphomnist``
(``crops/manifest.csv``): the rim statistics, background and grey std match the manifest
exactly when given the manifest's circle; the circle fit is our own and agrees to ~0.35 px in
diameter on average (``tests/data/test_realism.py``). ``crop_features`` turns one crop into
the fixed feature vector of the set discriminator in ``lymphosort.data.realism``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize

from lymphosort.errors import ConfigError

__all__ = ["APPEARANCE_DOC", "FEATURE_DOC", "crop_appearance", "crop_features"]

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

_N_RAYS = 90
_EDGE_SIGMA = 1.0  # px; calibrated on the 64 reference crops (diameter MAE ~0.35 px)
_INLIER_TOL = 3.0  # px; with _EDGE_SIGMA, the best agreement with manifest.csv
_RIM = (0.8, 1.1)  # rim annulus in units of R: reproduces manifest.csv's rim statistics exactly
_INNER = 0.7  # inner disc radius / R for texture: clear of the rim's relief
_BANDS = {"texture_low": (1 / 16, 1 / 8), "texture_mid": (1 / 8, 1 / 4), "texture_high": (1 / 4, 0.5 + 1e-9)}
_MIN_INLIERS = 12  # fewer rays on one circle: no cell found, cell statistics are NaN


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

"""The relief (3.x) crop renderer: what the LymphoMNIST microscope sees.

High magnification (a cell ~45 native px across), differential-interference-like contrast:
the image is, to first order, the slope of the optical path along one shear direction, so
one side of every rim is dark and the opposite side bright, always the same way round. The
dataset's crop pipeline follows: a square cut around each cell at a side that follows the
cell (51-73 native px, diameter ~0.76 of the side), resized to 64x64. See docs/lymphosim.md.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import fft as sfft
from scipy import ndimage

from lymphosort.data.synth.cells import cell_shape, sample_cells, texture
from lymphosort.data.synth.optics import session_salt
from lymphosort.data.synth.presets import ReliefRanges, SimPreset

#: native canvas side: the largest crop (73 px) plus room for the blur's wrap-around
CANVAS = 104


def form_relief(phase: np.ndarray, absorb: np.ndarray, *, psf_sigma: np.ndarray, gain: np.ndarray,
                shear_rad: np.ndarray, bias: np.ndarray, defocus: np.ndarray, halo_sigma: np.ndarray,
                workers: int = 1) -> np.ndarray:
    """Relative intensity change t (I = I0 * (1 + t)) of a batch [B, H, W] of path/absorption maps.

    DIC intensity ~ sin^2(bias + delta), delta the optical-path difference over the shear:
    linear in the slope of the (blurred) path along the shear direction u (a negative slope,
    the rim facing u, is bright), plus a small quadratic term that lifts both edges, minus
    absorption, plus a touch of defocus (the Laplacian of the path blurred by `halo_sigma` more:
    the faint bright halo just outside a cell). Per-image parameters are [B] arrays.
    """
    b, h, w = phase.shape
    col = lambda v: np.asarray(v, dtype=np.float32).reshape(b, 1, 1)  # noqa: E731
    fy = sfft.fftfreq(h).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(w).astype(np.float32)[None, :]
    f2 = fy**2 + fx**2
    otf = np.exp(-2.0 * np.pi**2 * col(psf_sigma) ** 2 * f2)
    fp = sfft.rfft2(phase, workers=workers) * otf
    fa = sfft.rfft2(absorb, workers=workers) * otf
    deriv = 2j * np.pi * (fx * col(np.cos(shear_rad)) + fy * col(np.sin(shear_rad)))
    slope = sfft.irfft2(fp * deriv, s=(h, w), workers=workers)
    halo = np.exp(-2.0 * np.pi**2 * col(halo_sigma) ** 2 * f2)
    lap = sfft.irfft2(fp * halo * (-4.0 * np.pi**2 * f2), s=(h, w), workers=workers)
    a = sfft.irfft2(fa, s=(h, w), workers=workers)
    d = -col(gain) * slope
    return (d + col(bias) * d**2 - a + col(defocus) * lap).astype(np.float32)


def cell_path(p: dict[str, np.ndarray], center_xy: np.ndarray, w: int, rng: np.random.Generator,
              absorption: np.ndarray, optics: ReliefRanges, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Optical path and absorption maps [n, w, w] of cells centred at center_xy: a sphere-like
    body, a denser nucleus, and granules of the cell's size and amount."""
    n = center_xy.shape[0]
    col = lambda v: np.asarray(v, dtype=np.float32).reshape(n, 1, 1)  # noqa: E731
    o = optics
    body, nuc, rn = cell_shape(p, center_xy, w, flatness=o.flatness)
    grains = texture(n, w, rng, workers, p["grain"], band=o.grain_band)
    if o.edge_sigma:  # no draws: older models render as they did
        body = ndimage.gaussian_filter(body, (0, o.edge_sigma, o.edge_sigma))
    speckle = texture(n, w, rng, workers, np.full(n, 1.0, np.float32), band=o.speckle_band)
    phase = (o.body_path * col(p["radius"]) * body + o.nucleus_path * rn * nuc
             + (o.grain_path * col(p["granularity"]) * grains + o.speckle_path * speckle) * np.sqrt(body))
    absorb = col(absorption) * (o.body_absorb * body + o.nucleus_absorb * nuc)
    return phase.astype(np.float32), absorb.astype(np.float32)


def relief_sessions(preset: SimPreset, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per-session nuisances of the relief microscope (a pure function of preset and id)."""
    r = preset.sessions
    assert isinstance(r, ReliefRanges)
    salt = session_salt(preset)
    keys = ("background", "shear_deg", "relief", "bias", "psf_sigma", "defocus", "halo_sigma", "absorption",
            "read_noise", "illum_gx", "illum_gy", "debris_rate", "haze")
    cols: dict[str, list[float]] = {k: [] for k in keys}
    for sid in np.asarray(ids, dtype=np.int64).ravel():
        g = np.random.default_rng([salt, int(sid), 0x3D1C])
        for k in ("background", "shear_deg", "relief", "bias", "psf_sigma", "defocus", "halo_sigma", "absorption",
                  "read_noise", "haze"):
            cols[k].append(float(g.uniform(*getattr(r, k))))
        ang, amp = g.uniform(0, 2 * np.pi), g.uniform(0, r.illumination)
        cols["illum_gx"].append(float(amp * np.cos(ang) / 64.0))
        cols["illum_gy"].append(float(amp * np.sin(ang) / 64.0))
        cols["debris_rate"].append(float(g.uniform(*r.debris_rate)))
    return {k: np.asarray(v, dtype=np.float32) for k, v in cols.items()}


def _neighbours(pre: SimPreset, lab: np.ndarray, radius: np.ndarray, side: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Which crops show a piece of another cell in a corner; its traits and canvas centre."""
    r = pre.sessions
    assert isinstance(r, ReliefRanges)
    b = lab.shape[0]
    has = rng.random(b) < r.p_neighbour
    other = sample_cells(pre, rng.integers(0, len(pre.classes), b), rng)
    # towards a corner (+-20 degrees), just far enough that only a piece enters the crop
    ang = (rng.integers(0, 4, b) * 0.5 + 0.25) * np.pi + rng.uniform(-0.35, 0.35, b)
    corner = side / 2 * np.sqrt(2.0)  # centre-to-corner distance of the crop
    dist = corner + other["radius"] * rng.uniform(0.35, 0.8, b)
    dist = np.maximum(dist, radius + other["radius"] + 1.0)  # cells do not overlap
    c = (CANVAS - 1) / 2
    xy = np.stack([c + dist * np.cos(ang), c + dist * np.sin(ang)], 1)
    return has, other, xy


def render_batch(pre: SimPreset, lab: np.ndarray, sess: np.ndarray, size: int,
                 rng: np.random.Generator, workers: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Crops uint8 [b, size, size] and their meta for labels `lab` and sessions `sess`."""
    r = pre.sessions
    assert isinstance(r, ReliefRanges)
    b = lab.shape[0]
    col = lambda v: np.asarray(v, dtype=np.float32).reshape(b, 1, 1)  # noqa: E731
    st = relief_sessions(pre, sess)
    cells = sample_cells(pre, lab, rng)
    # the dataset's cropper: a side that follows the cell (geometric diameter ~0.70 of it,
    # ~0.76 at the blurred rim's outer edge), clipped to the sides it cut, and a centre it
    # missed by about a pixel
    frac = np.clip(rng.normal(r.diam_frac[0], r.diam_frac[1], b), *r.diam_frac_clip)
    side = np.clip(np.rint(2.0 * cells["radius"] / frac), *r.crop_side).astype(np.int64)
    jit = np.clip(rng.normal(0, r.center_jitter, (b, 2)), -3, 3)
    centre = (CANVAS - 1) / 2 + jit
    phase, absorb = cell_path(cells, centre, CANVAS, rng, st["absorption"], r, workers)

    has_nb, nb, nb_xy = _neighbours(pre, lab, cells["radius"], side, rng)
    idx = np.nonzero(has_nb)[0]
    if idx.size:
        nb_phase, nb_absorb = cell_path({k: v[idx] for k, v in nb.items()}, nb_xy[idx], CANVAS, rng,
                                        st["absorption"][idx], r, workers)
        phase[idx] += nb_phase
        absorb[idx] += nb_absorb

    # haze: out-of-focus specks on the optics, a faint smooth relief over the background
    phase += col(st["haze"]) * texture(b, CANVAS, rng, workers, np.full(b, 3.0, np.float32), band=(0.7, 1.5))

    # debris: small specks anywhere (weak phase objects that the optics blur)
    n_deb = np.minimum(rng.poisson(st["debris_rate"]), 4)
    tot = int(n_deb.sum())
    bi = np.repeat(np.arange(b), n_deb)
    dy, dx = rng.integers(0, CANVAS, tot), rng.integers(0, CANVAS, tot)
    np.add.at(phase, (bi, dy, dx), rng.uniform(2.0, 6.0, tot).astype(np.float32))

    # per crop: where in the field (shear direction and gain drift a little) and lamp level
    shear = np.deg2rad(st["shear_deg"] + rng.normal(0, r.shear_crop_sd, b))
    gain = st["relief"] * np.exp(rng.normal(0, r.relief_crop_sd, b))
    shift = np.zeros(b) if pre.class_background_shift is None else np.asarray(pre.class_background_shift)[lab]
    background = st["background"] + rng.normal(0, r.background_crop_sd, b) + shift

    defocus = st["defocus"] + (rng.normal(0, r.defocus_crop_sd, b) if r.defocus_crop_sd else 0.0)
    t = form_relief(phase, absorb, psf_sigma=st["psf_sigma"], gain=gain, shear_rad=shear,
                    bias=st["bias"], defocus=defocus, halo_sigma=st["halo_sigma"], workers=workers)
    g = np.arange(CANVAS, dtype=np.float32) - (CANVAS - 1) / 2
    illum = 1.0 + col(st["illum_gx"]) * g[None, None, :] + col(st["illum_gy"]) * g[None, :, None]
    inten = col(background) * illum * (1.0 + t)
    inten += col(st["read_noise"]) * rng.standard_normal(inten.shape, dtype=np.float32)
    native = np.clip(np.rint(inten), 0, 255).astype(np.uint8)

    out = np.empty((b, size, size), np.uint8)
    for i in range(b):  # the dataset's crop, then its resize to the published size
        x0 = (CANVAS - int(side[i])) // 2
        box = native[i, x0:x0 + side[i], x0:x0 + side[i]]
        out[i] = np.asarray(Image.fromarray(box).resize((size, size), Image.BILINEAR))

    scale = size / side
    meta = {
        "radius": cells["radius"], "diameter": 2.0 * cells["radius"] * scale,
        "diam_frac": 2.0 * cells["radius"] / side, "crop_side": side,
        "aspect": cells["aspect"], "roughness": cells["roughness"], "granularity": cells["granularity"],
        "grain": cells["grain"], "nucleus_ratio": cells["nucleus_ratio"], "nucleus_offset": cells["nucleus_offset"],
        "angle": cells["angle"],
        # pixel centres map as (x + 0.5) * scale - 0.5 through the resize
        "center_x": (centre[:, 0] - (CANVAS - side) // 2 + 0.5) * scale - 0.5,
        "center_y": (centre[:, 1] - (CANVAS - side) // 2 + 0.5) * scale - 0.5,
        "neighbour": has_nb, "n_debris": n_deb.astype(np.int64),
        "background": background.astype(np.float32), "noise_std": st["read_noise"],
        "shear_deg": np.rad2deg(shear).astype(np.float32), "relief": gain.astype(np.float32),
        "psf_sigma": st["psf_sigma"], "defocus": defocus.astype(np.float32),
    }
    return out, meta

"""Cell morphology: sampling class traits and drawing absorption / optical-thickness maps."""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from lymphosort.data.synth.presets import BRIGHTFIELD_TRAITS, CLASS_TRAITS, SimPreset, Trait

#: boundary harmonics 2..6: 2 is an ellipse-like squash, higher ones are blebs/ruffles.
_HARMONICS = np.arange(2, 7)
_HARM_W = _HARMONICS.astype(np.float64) ** -0.7
_HARM_W /= np.sqrt((_HARM_W**2).sum())


def _draw(traits: list[Trait], labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mean = np.array([t.mean for t in traits])[labels]
    sd = np.array([t.sd for t in traits])[labels]
    lo = np.array([t.lo for t in traits])[labels]
    hi = np.array([t.hi for t in traits])[labels]
    return np.clip(rng.normal(mean, sd), lo, hi)


def sample_cells(preset: SimPreset, labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-cell generative parameters (the 'true' traits returned in meta)."""
    n = labels.shape[0]
    names = BRIGHTFIELD_TRAITS if preset.optics == "brightfield" else CLASS_TRAITS
    out = {k: _draw([getattr(c, k) for c in preset.classes], labels, rng) for k in names}
    # random boundary harmonics scaled so their rms equals the drawn roughness
    coef = rng.standard_normal((n, len(_HARMONICS), 2)) * _HARM_W[None, :, None] / np.sqrt(2.0)
    out["harmonics"] = coef * out["roughness"][:, None, None]
    # what the image actually contains: the realised rms boundary perturbation
    out["roughness"] = np.sqrt((out["harmonics"] ** 2).sum(axis=(1, 2)))
    out["angle"] = rng.uniform(0, np.pi, n)
    out["nucleus_angle"] = rng.uniform(0, 2 * np.pi, n)
    out["absorption_jitter"] = rng.uniform(0.75, 1.25, n)
    # cells flow at different heights: per-cell focus (brightfield); relief: no channel
    z_sd = getattr(preset.sessions, "z_jitter", 0.0)
    out["z_factor"] = np.exp(rng.normal(0.0, z_sd, n))
    return out


def texture(n: int, w: int, rng: np.random.Generator, workers: int,
            grain: np.ndarray | None = None, band: tuple[float, float] = (0.8 / 1.5, 2.2 / 1.5)) -> np.ndarray:
    """Unit-variance band-pass noise [n, w, w]: chromatin and cytoplasm grains.

    The band's Gaussian scales run from band[0] to band[1] x `grain` px (per image; None: the
    2.x band, 0.8-2.2 px, granules ~1.5-4 px across).
    """
    white = rng.standard_normal((n, w, w), dtype=np.float32)
    f2 = (sfft.fftfreq(w)[:, None] ** 2 + sfft.rfftfreq(w)[None, :] ** 2).astype(np.float32)
    if grain is None:  # the 2.x band, kept to the bit
        lo, hi = 0.8, 2.2
    else:
        g = np.asarray(grain, dtype=np.float32).reshape(-1, 1, 1)
        lo, hi = g * np.float32(band[0]), g * np.float32(band[1])
    band = np.exp(-2 * np.pi**2 * lo**2 * f2) - np.exp(-2 * np.pi**2 * hi**2 * f2)
    t = sfft.irfft2(sfft.rfft2(white, workers=workers) * band, s=(w, w), workers=workers)
    t /= t.std(axis=(1, 2), keepdims=True) + 1e-6
    return t.astype(np.float32)


def cell_shape(p: dict[str, np.ndarray], center_xy: np.ndarray, w: int,
               flatness: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Height profiles (body, nucleus) [n, w, w] in [0, 1] and nucleus radii [n, 1, 1].

    Body: a rough ellipse whose height profile is a spherical cap sqrt(1 - rho^2) (a cell in
    suspension is close to a sphere; `flatness` k > 1 gives sqrt(1 - rho^(2k)), flatter on
    top with steeper sides), its boundary perturbed by harmonics 2-6. Nucleus: a sphere
    inside, offset off-centre.
    """
    n = center_xy.shape[0]
    col = lambda v: np.asarray(v, dtype=np.float32).reshape(n, 1, 1)  # noqa: E731
    g = np.arange(w, dtype=np.float32)
    xx, yy = g[None, None, :] - col(center_xy[:, 0]), g[None, :, None] - col(center_xy[:, 1])
    ca, sa = col(np.cos(p["angle"])), col(np.sin(p["angle"]))
    r, asp = col(p["radius"]), col(p["aspect"])
    u = (xx * ca + yy * sa) / (r * np.sqrt(asp))
    v = (-xx * sa + yy * ca) * np.sqrt(asp) / r
    e = np.sqrt(u * u + v * v) + 1e-6
    z = (u + 1j * v) / e  # unit complex number e^{i theta}
    zk = z * z
    rb = np.ones_like(e)
    harm = p["harmonics"].astype(np.float32)
    for j in range(harm.shape[1]):
        rb += col(harm[:, j, 0]) * zk.real + col(harm[:, j, 1]) * zk.imag
        zk = zk * z
    rho2 = (e / rb) ** 2
    body = np.sqrt(np.clip(1.0 - (rho2 if flatness == 1.0 else rho2**flatness), 0.0, None))
    rn = r * col(p["nucleus_ratio"])
    off = (r - rn) * col(p["nucleus_offset"])
    nx = col(center_xy[:, 0]) + off * col(np.cos(p["nucleus_angle"]))
    ny = col(center_xy[:, 1]) + off * col(np.sin(p["nucleus_angle"]))
    nuc = np.sqrt(np.clip(1.0 - ((g[None, None, :] - nx) ** 2 + (g[None, :, None] - ny) ** 2) / rn**2, 0.0, None))
    return body, nuc, rn


def cell_maps(
    p: dict[str, np.ndarray],
    center_xy: np.ndarray,
    w: int,
    rng: np.random.Generator,
    absorption: np.ndarray,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Brightfield (2.x) absorption and optical-thickness maps [n, w, w] of cells centred at
    center_xy (window px): `cell_shape` plus band-pass grains modulating the absorption."""
    n = center_xy.shape[0]
    col = lambda v: np.asarray(v, dtype=np.float32).reshape(n, 1, 1)  # noqa: E731
    body, nuc, rn = cell_shape(p, center_xy, w)
    r = col(p["radius"])
    tex = texture(n, w, rng, workers)
    a = col(absorption * p["absorption_jitter"])
    # same DNA content in every nucleus: a bigger nucleus is less dense (density ~ 1/volume),
    # so the nucleus darkens the cell by about the same total amount whatever its size
    dens = col((0.72 / p["nucleus_ratio"]) ** 3)
    absorb = a * (0.6 * body + 0.5 * dens * nuc) + col(p["granularity"]) * tex * np.sqrt(body)
    # optical path in px of cell-equivalent thickness: the body, plus the denser nucleus
    phase = r * body + 0.35 * rn * nuc
    return absorb.astype(np.float32), phase.astype(np.float32)

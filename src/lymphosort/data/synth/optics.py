"""Bright-field image formation shared by crops and flow frames.

A scene is two maps on a canvas: absorption A (fraction of light removed) and optical
thickness phi (px of cell-equivalent path). A slightly defocused bright-field microscope
images them, to first order in the defocus (transport-of-intensity equation), as

    I = I0(x, y) * (1 - PSF*A + D * Laplacian(G_d * phi)) (*) motion blur along x

The Laplacian term is what makes a cell's rim dark and the ring just outside it bright
(the halo of the real crops): a phase bump focuses light at its edge. Everything is done
per image in the Fourier domain (one rfft2 per map), vectorised over a batch and
deterministic (scipy's pocketfft gives identical results for any number of workers).
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from lymphosort.data.synth.presets import SimPreset

_TWO_PI2 = 2.0 * np.pi**2


def _freq2(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared radial frequency and the x frequency (cycles/px) of an rfft2 grid."""
    fy = sfft.fftfreq(h).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(w).astype(np.float32)[None, :]
    return fy**2 + fx**2, np.broadcast_to(fx, (h, fx.shape[1]))


def session_salt(preset: SimPreset) -> int:
    """The integer that salts a preset's session draws (renaming a preset changes its sessions)."""
    return zlib.crc32((preset.session_salt or preset.name).encode())


def session_table(preset: SimPreset, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Acquisition nuisances of each session id (a pure function of preset name and id).

    A session is one recording: fixed lamp level, focus, camera noise, flow speed, how
    often walls and debris enter a crop. Train and test can thus come from different
    sessions, as in a real lab.
    """
    r = preset.sessions
    salt = session_salt(preset)
    cols: dict[str, list[float]] = {k: [] for k in (
        "background", "read_noise", "shot_gain", "psf_sigma", "defocus_sigma", "defocus",
        "absorption", "motion_px", "illum_gx", "illum_gy", "p_wall", "debris_rate")}
    for sid in np.asarray(ids, dtype=np.int64).ravel():
        g = np.random.default_rng([salt, int(sid), 0x5E55])
        u = lambda lohi: float(g.uniform(*lohi))  # noqa: E731
        cols["background"].append(float(g.choice(r.background_levels)) + float(g.normal(0, r.background_jitter)))
        cols["read_noise"].append(u(r.read_noise))
        cols["shot_gain"].append(u(r.shot_gain))
        cols["psf_sigma"].append(u(r.psf_sigma))
        cols["defocus_sigma"].append(u(r.defocus_sigma))
        cols["defocus"].append(u(r.defocus))
        cols["absorption"].append(u(r.absorption))
        cols["motion_px"].append(u(r.motion_px))
        ang = g.uniform(0, 2 * np.pi)
        amp = g.uniform(0, r.illumination)  # fractional change across 64 px
        cols["illum_gx"].append(float(amp * np.cos(ang) / 64.0))
        cols["illum_gy"].append(float(amp * np.sin(ang) / 64.0))
        cols["p_wall"].append(u(r.p_wall))
        cols["debris_rate"].append(u(r.debris_rate))
    return {k: np.asarray(v, dtype=np.float32) for k, v in cols.items()}


def session_pattern(preset: SimPreset, sid: int, h: int, w: int) -> np.ndarray:
    """Static fixed-pattern texture of a session's background (dust on optics, lamp structure)."""
    salt = session_salt(preset)
    g = np.random.default_rng([salt, int(sid), 0xBA7])
    field = ndimage.gaussian_filter(g.standard_normal((h, w)), 2.5, mode="wrap")
    field /= field.std() + 1e-12
    return (preset.sessions.pattern * field).astype(np.float32)


def form_image(
    absorption: np.ndarray,
    phase: np.ndarray,
    *,
    psf_sigma: np.ndarray,
    defocus_sigma: np.ndarray,
    defocus: np.ndarray,
    motion_px: np.ndarray,
    workers: int = 1,
) -> np.ndarray:
    """Relative transmission change t (I = I0 * (1 + t)) of a batch [B, H, W] of scenes."""
    b, h, w = absorption.shape
    f2, fx = _freq2(h, w)
    col = lambda v: np.asarray(v, dtype=np.float32).reshape(b, 1, 1)  # noqa: E731
    otf_psf = np.exp(-_TWO_PI2 * col(psf_sigma) ** 2 * f2)
    # defocus blurs more than the in-focus PSF: it sets the halo width
    otf_def = np.exp(-_TWO_PI2 * (col(defocus_sigma) ** 2 + col(psf_sigma) ** 2) * f2)
    # a box of length L along the flow (x) during the exposure
    otf_mot = np.sinc(col(motion_px) * fx).astype(np.float32)
    lap = (-4.0 * np.pi**2) * f2
    fa = sfft.rfft2(absorption, workers=workers)
    fp = sfft.rfft2(phase, workers=workers)
    spec = (-fa * otf_psf + col(defocus) * lap * fp * otf_def) * otf_mot
    return sfft.irfft2(spec, s=(h, w), workers=workers).astype(np.float32)


def add_noise(intensity: np.ndarray, read_noise: np.ndarray, shot_gain: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Camera noise: Poisson-like shot noise (variance ~ gain * I) plus Gaussian read noise."""
    b = intensity.shape[0]
    col = lambda v: np.asarray(v, dtype=np.float32).reshape((b,) + (1,) * (intensity.ndim - 1))  # noqa: E731
    sd = np.sqrt(col(read_noise) ** 2 + col(shot_gain) * np.maximum(intensity, 0.0))
    return intensity + sd * rng.standard_normal(intensity.shape, dtype=np.float32)


def wall_rows(n_rows: int, centers: np.ndarray, widths: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Row profiles [B, n_rows] of horizontal wall bands (soft-edged boxes), summed over walls.

    centers/widths/strength: [B, K] (strength 0 = no wall). A PDMS channel wall seen from
    above is a dark line a few px thick running along the flow.
    """
    y = np.arange(n_rows, dtype=np.float32)[None, None, :]
    prof = np.clip(widths[..., None] / 2 + 0.5 - np.abs(y - centers[..., None]), 0.0, 1.0)
    return (strength[..., None] * prof).sum(axis=1).astype(np.float32)

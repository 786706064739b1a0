"""LymphoSim crops: one centred lymphocyte per 64x64 bright-field crop, as in LymphoMNIST."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lymphosort.data.info import CLASSES
from lymphosort.data.synth.cells import cell_maps, sample_cells
from lymphosort.data.synth.optics import add_noise, form_image, session_pattern, session_table, wall_rows
from lymphosort.data.synth.presets import SimPreset, get_preset
from lymphosort.errors import ConfigError

#: Images rendered per vectorised batch. Fixed (not tuned to the machine) so that a seed
#: renders the same bytes everywhere; ~40 MB of float32 scratch per map at 64x64.
CHUNK = 512
_MARGIN = 4  # canvas margin so the Fourier-domain blur's wrap-around stays off the crop
_WINDOW = 40  # cell maps are drawn in a central window: a cell is < 40 px across


def _workers() -> int:
    return max(1, int(torch.get_num_threads()))


def balanced_labels(n: int, rng: np.random.Generator, n_classes: int = len(CLASSES)) -> np.ndarray:
    """n labels with class counts differing by at most one, in random order."""
    return rng.permutation(np.arange(n) % n_classes).astype(np.int64)


def _resolve_sessions(sessions: int | Sequence[int] | np.ndarray | None, preset: SimPreset) -> np.ndarray:
    if sessions is None:
        return np.arange(preset.n_sessions, dtype=np.int64)
    pool = np.atleast_1d(np.asarray(sessions, dtype=np.int64))
    if pool.size == 0 or (pool < 0).any():
        raise ConfigError("sessions must be a non-empty set of non-negative session ids")
    return pool


def render_crops(
    n: int,
    *,
    seed: int,
    preset: str | SimPreset = "default",
    labels: Sequence[int] | np.ndarray | None = None,
    sessions: int | Sequence[int] | np.ndarray | None = None,
    size: int = 64,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Render n crops: (uint8 [n, size, size], int64 labels [n], meta).

    labels: on-disk labels (B=0, T4=1, T8=2) per image; None draws a balanced set.
    sessions: the pool of session ids each image is drawn from (uniformly); an int means
    one session; None uses the preset's pool 0..n_sessions-1.
    meta: per-image arrays of the true generative parameters (radius, diameter, aspect,
    roughness, granularity, nucleus_ratio, nucleus_offset, absorption, angle, center_x,
    center_y, wall, n_debris, pad_rows) and the session and its nuisances (session,
    background, noise_std, psf_sigma, defocus, defocus_sigma, motion_px).
    Deterministic for (n, seed, preset, labels, sessions, size).
    """
    pre = get_preset(preset)
    if n < 0 or size < 8:
        raise ConfigError(f"need n >= 0 and size >= 8 (got n={n}, size={size})")
    rng0 = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    if labels is None:
        lab = balanced_labels(n, rng0, len(pre.classes))
    else:
        lab = np.asarray(labels, dtype=np.int64).ravel()
        if lab.shape[0] != n or (lab < 0).any() or (lab >= len(pre.classes)).any():
            raise ConfigError(f"labels must be {n} ints in [0, {len(pre.classes)})")
    pool = _resolve_sessions(sessions, pre)
    sess = pool[rng0.integers(0, pool.size, n)] if n else np.zeros(0, np.int64)

    images = np.empty((n, size, size), dtype=np.uint8)
    metas: list[dict[str, np.ndarray]] = []
    for ci, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, ci)))
        img, meta = _render_batch(pre, lab[start:stop], sess[start:stop], size, rng)
        images[start:stop] = img
        metas.append(meta)
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]} if metas else {}
    meta["session"] = sess
    return images, lab, meta


def _render_batch(pre: SimPreset, lab: np.ndarray, sess: np.ndarray, size: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    b = lab.shape[0]
    workers = _workers()
    canvas = max(size, _WINDOW) + 2 * _MARGIN
    st = session_table(pre, sess)
    cells = sample_cells(pre, lab, rng)
    jit = np.clip(rng.normal(0, pre.sessions.center_jitter, (b, 2)), -3, 3)
    c_win = (_WINDOW - 1) / 2 + jit
    a_cell, p_cell = cell_maps(cells, c_win, _WINDOW, rng, st["absorption"], workers)
    absorb = np.zeros((b, canvas, canvas), np.float32)
    phase = np.zeros_like(absorb)
    o = (canvas - _WINDOW) // 2
    absorb[:, o:o + _WINDOW, o:o + _WINDOW] = a_cell
    phase[:, o:o + _WINDOW, o:o + _WINDOW] = p_cell

    # channel walls: a dark band near the top or bottom edge of the crop, sometimes doubled
    crop0 = (canvas - size) // 2
    has_wall = rng.random(b) < st["p_wall"]
    top = rng.random(b) < 0.5
    dist = rng.uniform(1.0, 12.0, b)  # rows between the crop edge and the wall
    double = rng.random(b) < 0.35
    gap = rng.uniform(5.0, 10.0, b)
    y1 = np.where(top, crop0 + dist, crop0 + size - 1 - dist)
    y2 = np.where(top, y1 - gap, y1 + gap)
    centers = np.stack([y1, y2], 1)
    widths = rng.uniform(2.0, 4.0, (b, 2))
    strength = rng.uniform(0.3, 0.5, (b, 2)) * np.stack([has_wall, has_wall & double], 1)
    rows = wall_rows(canvas, centers, widths, strength)
    absorb += rows[:, :, None]
    phase += 1.5 * rows[:, :, None]  # the wall's edge also refracts: a faint bright line beside it

    # debris: point-like absorbers (and weak phase objects) anywhere, blurred by the optics
    n_deb = np.minimum(rng.poisson(st["debris_rate"] * (canvas / 64.0) ** 2), 6)
    tot = int(n_deb.sum())
    bi = np.repeat(np.arange(b), n_deb)
    dy, dx = rng.integers(0, canvas, tot), rng.integers(0, canvas, tot)
    np.add.at(absorb, (bi, dy, dx), rng.uniform(0.5, 1.6, tot).astype(np.float32))
    np.add.at(phase, (bi, dy, dx), rng.uniform(0.0, 2.0, tot).astype(np.float32))

    t = form_image(absorb, phase, psf_sigma=st["psf_sigma"], defocus_sigma=st["defocus_sigma"],
                   defocus=st["defocus"] * cells["z_factor"], motion_px=st["motion_px"], workers=workers)
    t = t[:, crop0:crop0 + size, crop0:crop0 + size]
    # illumination: a session-wide linear gradient plus its static background pattern
    g = np.arange(size, dtype=np.float32) - (size - 1) / 2
    illum = 1.0 + st["illum_gx"][:, None, None] * g[None, None, :] + st["illum_gy"][:, None, None] * g[None, :, None]
    for sid in np.unique(sess):
        illum[sess == sid] += session_pattern(pre, int(sid), size, size)
    intensity = st["background"][:, None, None] * illum * (1.0 + t)
    noisy = add_noise(intensity, st["read_noise"], st["shot_gain"], rng)
    img = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    # black padding rows where the crop ran past the camera frame
    pad = np.where(rng.random(b) < pre.sessions.p_pad,
                   rng.integers(1, 4, b), 0)
    pad_top = rng.random(b) < 0.5
    for i in np.nonzero(pad)[0]:
        if pad_top[i]:
            img[i, : pad[i]] = 0
        else:
            img[i, size - pad[i]:] = 0

    noise_sd = np.sqrt(st["read_noise"] ** 2 + st["shot_gain"] * st["background"])
    meta = {
        "radius": cells["radius"], "diameter": 2 * cells["radius"] * 1.0,
        "aspect": cells["aspect"], "roughness": cells["roughness"], "granularity": cells["granularity"],
        "nucleus_ratio": cells["nucleus_ratio"], "nucleus_offset": cells["nucleus_offset"],
        "absorption": st["absorption"] * cells["absorption_jitter"], "angle": cells["angle"],
        "center_x": (size - 1) / 2 + jit[:, 0], "center_y": (size - 1) / 2 + jit[:, 1],
        "wall": has_wall, "n_debris": n_deb.astype(np.int64), "pad_rows": pad.astype(np.int64),
        "background": st["background"], "noise_std": noise_sd, "psf_sigma": st["psf_sigma"],
        "defocus": st["defocus"] * cells["z_factor"], "defocus_sigma": st["defocus_sigma"], "motion_px": st["motion_px"],
    }
    return img, meta

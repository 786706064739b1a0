"""The brightfield (2.x) crop renderer, kept for history: low-magnification channel video,
a ~20 px cell centred in a 64x64 crop (the `brightfield*` presets). See docs/lymphosim.md."""

from __future__ import annotations

import numpy as np

from lymphosort.data.synth.cells import cell_maps, sample_cells
from lymphosort.data.synth.optics import add_noise, form_image, session_pattern, session_table, wall_rows
from lymphosort.data.synth.presets import SimPreset

MARGIN = 4  # canvas margin so the Fourier-domain blur's wrap-around stays off the crop
WINDOW = 40  # cell maps are drawn in a central window: a cell is < 40 px across


def render_batch(pre: SimPreset, lab: np.ndarray, sess: np.ndarray, size: int,
                 rng: np.random.Generator, workers: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Crops uint8 [b, size, size] and their meta for labels `lab` and sessions `sess`."""
    b = lab.shape[0]
    canvas = max(size, WINDOW) + 2 * MARGIN
    st = session_table(pre, sess)
    cells = sample_cells(pre, lab, rng)
    jit = np.clip(rng.normal(0, pre.sessions.center_jitter, (b, 2)), -3, 3)
    c_win = (WINDOW - 1) / 2 + jit
    a_cell, p_cell = cell_maps(cells, c_win, WINDOW, rng, st["absorption"], workers)
    absorb = np.zeros((b, canvas, canvas), np.float32)
    phase = np.zeros_like(absorb)
    o = (canvas - WINDOW) // 2
    absorb[:, o:o + WINDOW, o:o + WINDOW] = a_cell
    phase[:, o:o + WINDOW, o:o + WINDOW] = p_cell

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

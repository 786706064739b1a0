"""LymphoSim crops: one centred lymphocyte per 64x64 crop, as in LymphoMNIST."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lymphosort.data.info import CLASSES
from lymphosort.data.synth import brightfield, relief
from lymphosort.data.synth.presets import SimPreset, get_preset
from lymphosort.errors import ConfigError

#: Images rendered per vectorised batch. Fixed (not tuned to the machine) so that a seed
#: renders the same bytes everywhere; ~40 MB of float32 scratch per map at 64x64.
CHUNK = 512
#: the renderer of each image model (`SimPreset.optics`)
_RENDERERS = {"relief": relief.render_batch, "brightfield": brightfield.render_batch}


def _workers() -> int:
    return max(1, int(torch.get_num_threads()))


def balanced_labels(n: int, rng: np.random.Generator, n_classes: int = len(CLASSES)) -> np.ndarray:
    """n labels with class counts differing by at most one, in random order."""
    return rng.permutation(np.arange(n) % n_classes).astype(np.int64)


def share_labels(n: int, shares: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """n labels whose class counts follow `shares` (largest remainder), in random order."""
    p = np.asarray(shares, dtype=np.float64)
    if p.ndim != 1 or p.size < 1 or (p < 0).any() or p.sum() <= 0:
        raise ConfigError(f"class shares must be non-negative and not all zero, got {list(shares)}")
    exact = n * p / p.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]] += 1
    return rng.permutation(np.repeat(np.arange(p.size), counts)).astype(np.int64)


def draw_labels(n: int, preset: SimPreset, rng: np.random.Generator) -> np.ndarray:
    """The preset's labels for n images: its class shares, or balanced where it has none."""
    if preset.class_shares is None:
        return balanced_labels(n, rng, len(preset.classes))
    return share_labels(n, preset.class_shares, rng)


def class_session_pool(pool: np.ndarray, lab: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Each image's session when every class was recorded in sessions of its own: class c
    draws from pool[c::n_classes] (the whole pool where that share would be empty)."""
    pool = np.sort(pool)
    sess = np.empty(lab.shape[0], np.int64)
    for c in range(n_classes):
        own = pool[c::n_classes] if pool.size >= n_classes else pool
        sel = lab == c
        sess[sel] = own[rng.integers(0, own.size, int(sel.sum()))]
    return sess


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

    labels: on-disk labels (B=0, T4=1, T8=2) per image; None draws the preset's class shares
    (LymphoMNIST's for the relief presets; balanced for the 2.x history ones).
    sessions: the pool of session ids each image is drawn from (uniformly); an int means
    one session; None uses the preset's pool 0..n_sessions-1.
    meta: per-image arrays of the true generative parameters (radius, diameter in output px,
    aspect, roughness, granularity, nucleus_ratio, nucleus_offset, angle, center_x, center_y,
    ...) and the session and its nuisances (session, background, noise_std, psf_sigma, ...);
    the keys depend on the image model (docs/lymphosim.md lists them).
    Deterministic for (n, seed, preset, labels, sessions, size).
    """
    pre = get_preset(preset)
    if n < 0 or size < 8:
        raise ConfigError(f"need n >= 0 and size >= 8 (got n={n}, size={size})")
    rng0 = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    if labels is None:
        lab = draw_labels(n, pre, rng0)
    else:
        lab = np.asarray(labels, dtype=np.int64).ravel()
        if lab.shape[0] != n or (lab < 0).any() or (lab >= len(pre.classes)).any():
            raise ConfigError(f"labels must be {n} ints in [0, {len(pre.classes)})")
    pool = _resolve_sessions(sessions, pre)
    if pre.class_background_shift is not None:
        sess = class_session_pool(pool, lab, len(pre.classes), rng0)
    else:
        sess = pool[rng0.integers(0, pool.size, n)] if n else np.zeros(0, np.int64)
    render = _RENDERERS[pre.optics]

    images = np.empty((n, size, size), dtype=np.uint8)
    metas: list[dict[str, np.ndarray]] = []
    for ci, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, ci)))
        img, meta = render(pre, lab[start:stop], sess[start:stop], size, rng, _workers())
        images[start:stop] = img
        metas.append(meta)
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]} if metas else {}
    meta["session"] = sess
    return images, lab, meta

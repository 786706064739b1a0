"""LymphoSim flow-channel frames: cells crossing a microfluidic channel, with ground truth.

A frame is a strip of the channel (default 96 x 320 px, flow along +x): two dark walls
near the top and bottom edges, a static background (illumination gradient, fixed pattern,
debris stuck to the glass), fresh camera noise per frame, and cells entering at the left
and leaving at the right. Cells use the same optics and morphology as the crops, so a
64x64 crop around a cell looks like a dataset crop. Cells follow a Poiseuille profile
(faster at the channel centre), so a close pair can drift together or apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from lymphosort.data.synth.cells import cell_maps, sample_cells
from lymphosort.data.synth.crops import _WINDOW, _workers
from lymphosort.data.synth.optics import add_noise, form_image, session_pattern, session_table, wall_rows
from lymphosort.data.synth.presets import SimPreset, get_preset
from lymphosort.errors import ConfigError

_MARGIN = 8
_HALO_PAD = 3  # px added around the body's extent: the box includes the bright halo


@dataclass(frozen=True)
class CellTruth:
    """Ground truth of one cell visible in a frame."""

    cell_id: int
    cls: int  # on-disk label: B=0, T4=1, T8=2
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), clipped to the frame, x1/y1 exclusive
    center: tuple[float, float]  # (x, y) in frame px (may lie outside when entering/leaving)
    isolated: bool  # False when another cell's box is within `pair_gap_px`
    whole: bool  # True when the unclipped box lies fully inside the frame


@dataclass(frozen=True)
class FlowFrame:
    index: int
    t_s: float
    image: np.ndarray  # uint8 [H, W]
    truth: list[CellTruth]


@dataclass
class _Cell:
    cell_id: int
    cls: int
    x: float
    y: float
    speed: float
    half: float  # half box size (px)
    params: dict[str, np.ndarray]  # one-row arrays from sample_cells


def render_flow(
    n_frames: int,
    *,
    seed: int,
    preset: str | SimPreset = "default",
    height: int = 96,
    width: int = 320,
    fps: float = 1000.0,
    flow_px_per_frame: float = 6.0,
    cell_rate: float = 0.012,
    p_pair: float = 0.15,
    session: int | None = None,
    pair_gap_px: int = 6,
) -> Iterator[FlowFrame]:
    """Yield n_frames frames of one session (default: one of the preset's pool, from the seed).

    cell_rate: mean cells entering per frame (Poisson); p_pair: chance an arrival brings a
    second cell close behind it (a doublet-like event the sorter must reject).
    """
    pre = get_preset(preset)
    if height < 48 or width < 64 or n_frames < 0 or flow_px_per_frame <= 0 or fps <= 0:
        raise ConfigError("render_flow needs height >= 48, width >= 64, n_frames >= 0, positive fps and flow")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(20,)))
    sid = int(rng.integers(0, pre.n_sessions)) if session is None else int(session)
    st = session_table(pre, np.array([sid]))
    hc, wc = height + 2 * _MARGIN, width + 2 * _MARGIN
    workers = _workers()

    # static scene: walls near top and bottom, debris stuck to the glass
    wall_c = np.array([[_MARGIN + rng.uniform(3, 7), _MARGIN + height - 1 - rng.uniform(3, 7)]])
    rows = wall_rows(hc, wall_c, rng.uniform(2.5, 4.0, (1, 2)), rng.uniform(0.35, 0.5, (1, 2)))[0]
    static_a = np.repeat(rows[:, None], wc, 1)
    static_p = 1.5 * static_a
    n_deb = rng.poisson(st["debris_rate"][0] * height * width / 64.0**2)
    dy, dx = rng.integers(0, hc, n_deb), rng.integers(0, wc, n_deb)
    np.add.at(static_a, (dy, dx), rng.uniform(0.5, 1.6, n_deb).astype(np.float32))
    np.add.at(static_p, (dy, dx), rng.uniform(0.0, 2.0, n_deb).astype(np.float32))
    gx = np.arange(width, dtype=np.float32) - (width - 1) / 2
    gy = np.arange(height, dtype=np.float32) - (height - 1) / 2
    illum = 1.0 + st["illum_gx"][0] * gx[None, :] + st["illum_gy"][0] * gy[:, None]
    illum += session_pattern(pre, sid, height, width)
    i0 = st["background"][0] * illum

    yc, half_w = (height - 1) / 2, max(8.0, (wall_c[0, 1] - wall_c[0, 0]) / 2 - 12)
    cells: list[_Cell] = []
    next_id = 0

    def spawn(x: float, y: float) -> _Cell:
        nonlocal next_id
        cls = int(rng.integers(0, len(pre.classes)))
        p = sample_cells(pre, np.array([cls]), rng)
        half = float(p["radius"][0] * np.sqrt(p["aspect"][0]) * (1 + 3 * p["roughness"][0])) + _HALO_PAD
        speed = flow_px_per_frame * (1.0 - 0.3 * ((y - yc) / (half_w + 12)) ** 2)  # Poiseuille
        cells.append(_Cell(next_id, cls, x, y, speed, half, p))
        next_id += 1
        return cells[-1]

    for k in range(n_frames):
        for _ in range(rng.poisson(cell_rate)):
            y = float(np.clip(yc + rng.normal(0, half_w / 2.5), yc - half_w, yc + half_w))
            x = -14.0 - rng.uniform(0, flow_px_per_frame)
            first = spawn(x, y)
            if rng.random() < p_pair:  # a second cell close behind, travelling with it (a doublet)
                second = spawn(x - rng.uniform(18, 30), float(np.clip(y + rng.normal(0, 5), yc - half_w, yc + half_w)))
                second.speed = first.speed
        a, ph = static_a.copy(), static_p.copy()
        truth_raw = []
        frng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(21, k)))
        for c in cells:
            ix, iy = int(np.floor(c.x)), int(np.floor(c.y))
            ctr = np.array([[(_WINDOW - 1) / 2 + (c.x - ix), (_WINDOW - 1) / 2 + (c.y - iy)]])
            # the same per-cell generator every frame: the cell keeps its texture as it moves
            crng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(22, c.cell_id)))
            ca, cp = cell_maps(c.params, ctr, _WINDOW, crng, st["absorption"], 1)
            x0 = ix + _MARGIN - (_WINDOW - 1) // 2
            y0 = iy + _MARGIN - (_WINDOW - 1) // 2
            sx0, sy0 = max(0, -x0), max(0, -y0)
            sx1, sy1 = min(_WINDOW, wc - x0), min(_WINDOW, hc - y0)
            if sx1 > sx0 and sy1 > sy0:
                a[y0 + sy0:y0 + sy1, x0 + sx0:x0 + sx1] += ca[0, sy0:sy1, sx0:sx1]
                ph[y0 + sy0:y0 + sy1, x0 + sx0:x0 + sx1] += cp[0, sy0:sy1, sx0:sx1]
            full = (c.x - c.half, c.y - c.half, c.x + c.half + 1, c.y + c.half + 1)
            box = (max(0, int(np.floor(full[0]))), max(0, int(np.floor(full[1]))),
                   min(width, int(np.ceil(full[2]))), min(height, int(np.ceil(full[3]))))
            if box[2] - box[0] >= 4 and box[3] - box[1] >= 4:
                whole = full[0] >= 0 and full[1] >= 0 and full[2] <= width and full[3] <= height
                truth_raw.append((c, box, whole))
        t = form_image(a[None], ph[None], psf_sigma=st["psf_sigma"], defocus_sigma=st["defocus_sigma"],
                       defocus=st["defocus"], motion_px=st["motion_px"], workers=workers)[0]
        inten = i0 * (1.0 + t[_MARGIN:_MARGIN + height, _MARGIN:_MARGIN + width])
        img = np.clip(np.rint(add_noise(inten[None], st["read_noise"], st["shot_gain"], frng)[0]), 0, 255)
        truth = []
        for c, box, whole in truth_raw:
            iso = all(
                o is c or box[0] - ob[2] > pair_gap_px or ob[0] - box[2] > pair_gap_px
                or box[1] - ob[3] > pair_gap_px or ob[1] - box[3] > pair_gap_px
                for o, ob, _ in truth_raw
            )
            truth.append(CellTruth(c.cell_id, c.cls, box, (float(c.x), float(c.y)), iso, bool(whole)))
        yield FlowFrame(k, k / fps, img.astype(np.uint8), truth)
        for c in cells:
            c.x += c.speed
        cells = [c for c in cells if c.x - c.half < width + 2]

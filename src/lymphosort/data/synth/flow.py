"""LymphoSim flow-channel frames: cells crossing a microfluidic channel, with ground truth.

A frame is a strip of the channel (default 96 x 320 px, flow along +x): two walls near the
top and bottom edges, a static background (illumination gradient, debris stuck to the
glass), fresh camera noise per frame, and cells entering at the left and leaving at the
right. Cells use the same optics and morphology as the crops, at the scale of the
dataset's 64x64 crops (relief model: native px x 64/59, the median crop's resize), so a
64x64 crop around a cell looks like a dataset crop. Cells follow a Poiseuille profile
(faster at the channel centre), so a close pair can drift together or apart; the relief
model's sorter focuses them hydrodynamically onto the channel's centre line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from lymphosort.data.synth.brightfield import WINDOW as _BF_WINDOW
from lymphosort.data.synth.cells import cell_maps, sample_cells
from lymphosort.data.synth.crops import _workers
from lymphosort.data.synth.optics import add_noise, form_image, session_pattern, session_table, wall_rows
from lymphosort.data.synth.presets import SimPreset, get_preset
from lymphosort.data.synth.relief import cell_path, form_relief, relief_sessions
from lymphosort.errors import ConfigError

_MARGIN = 8
_HALO_PAD = 3  # px added around the body's extent: the box includes the bright halo
#: relief model: flow frames at the dataset's crop scale (native px x 64 / median side 59)
RELIEF_SCALE = 64.0 / 59.0


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


def _gradient(st: dict[str, np.ndarray], height: int, width: int) -> np.ndarray:
    """A session's linear illumination gradient over the frame (1 at the centre)."""
    gx = np.arange(width, dtype=np.float32) - (width - 1) / 2
    gy = np.arange(height, dtype=np.float32) - (height - 1) / 2
    return 1.0 + st["illum_gx"][0] * gx[None, :] + st["illum_gy"][0] * gy[:, None]


class _Optics:
    """What differs between the image models in a frame: static scene, cell maps, imaging."""

    window: int
    focus_sd: float | None  # relief: cells focused on the centre line (sd, px); None: spread

    def __init__(self, pre: SimPreset, sid: int, height: int, width: int, rng: np.random.Generator) -> None:
        self.pre, self.h, self.w = pre, height, width
        self.hc, self.wc = height + 2 * _MARGIN, width + 2 * _MARGIN
        self.wall_c = np.array([[_MARGIN + rng.uniform(3, 7), _MARGIN + height - 1 - rng.uniform(3, 7)]])
        self.wall_rows = wall_rows(self.hc, self.wall_c, rng.uniform(2.5, 4.0, (1, 2)), rng.uniform(0.35, 0.5, (1, 2)))[0]

    def cell(self, p: dict[str, np.ndarray], ctr: np.ndarray, crng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def image(self, a: np.ndarray, ph: np.ndarray, frng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class _Brightfield(_Optics):
    window, focus_sd = _BF_WINDOW, None

    def __init__(self, pre: SimPreset, sid: int, height: int, width: int, rng: np.random.Generator) -> None:
        super().__init__(pre, sid, height, width, rng)
        self.st = st = session_table(pre, np.array([sid]))
        self.static_a = np.repeat(self.wall_rows[:, None], self.wc, 1)
        self.static_p = 1.5 * self.static_a
        n_deb = rng.poisson(st["debris_rate"][0] * height * width / 64.0**2)
        dy, dx = rng.integers(0, self.hc, n_deb), rng.integers(0, self.wc, n_deb)
        np.add.at(self.static_a, (dy, dx), rng.uniform(0.5, 1.6, n_deb).astype(np.float32))
        np.add.at(self.static_p, (dy, dx), rng.uniform(0.0, 2.0, n_deb).astype(np.float32))
        illum = _gradient(st, height, width) + session_pattern(pre, sid, height, width)
        self.i0 = st["background"][0] * illum

    def cell(self, p: dict[str, np.ndarray], ctr: np.ndarray, crng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return cell_maps(p, ctr, self.window, crng, self.st["absorption"], 1)

    def image(self, a: np.ndarray, ph: np.ndarray, frng: np.random.Generator) -> np.ndarray:
        st = self.st
        t = form_image(a[None], ph[None], psf_sigma=st["psf_sigma"], defocus_sigma=st["defocus_sigma"],
                       defocus=st["defocus"], motion_px=st["motion_px"], workers=_workers())[0]
        inten = self.i0 * (1.0 + t[_MARGIN:_MARGIN + self.h, _MARGIN:_MARGIN + self.w])
        return add_noise(inten[None], st["read_noise"], st["shot_gain"], frng)[0]


class _Relief(_Optics):
    window, focus_sd = 80, 2.5

    def __init__(self, pre: SimPreset, sid: int, height: int, width: int, rng: np.random.Generator) -> None:
        super().__init__(pre, sid, height, width, rng)
        self.st = st = relief_sessions(pre, np.array([sid]))
        # walls are steps of optical path (PDMS/glass edges): relief lines, not dark bands
        self.static_a = np.zeros((self.hc, self.wc), np.float32)
        self.static_p = np.repeat(6.0 * self.wall_rows[:, None], self.wc, 1).astype(np.float32)
        n_deb = rng.poisson(st["debris_rate"][0] * height * width / 64.0**2)
        dy, dx = rng.integers(0, self.hc, n_deb), rng.integers(0, self.wc, n_deb)
        np.add.at(self.static_p, (dy, dx), rng.uniform(2.0, 6.0, n_deb).astype(np.float32))
        self.i0 = st["background"][0] * _gradient(st, height, width)
        self.psf = st["psf_sigma"] * RELIEF_SCALE

    def cell(self, p: dict[str, np.ndarray], ctr: np.ndarray, crng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        ph, a = cell_path(p, ctr, self.window, crng, self.st["absorption"], self.pre.sessions, 1)
        return a, ph

    def image(self, a: np.ndarray, ph: np.ndarray, frng: np.random.Generator) -> np.ndarray:
        st = self.st
        t = form_relief(ph[None], a[None], psf_sigma=self.psf, gain=st["relief"], shear_rad=np.deg2rad(st["shear_deg"]),
                        bias=st["bias"], defocus=st["defocus"], halo_sigma=st["halo_sigma"] * RELIEF_SCALE,
                        workers=_workers())[0]
        inten = self.i0 * (1.0 + t[_MARGIN:_MARGIN + self.h, _MARGIN:_MARGIN + self.w])
        return inten + st["read_noise"][0] * frng.standard_normal(inten.shape, dtype=np.float32)


def _sample(pre: SimPreset, cls: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    p = sample_cells(pre, np.array([cls]), rng)
    if pre.optics == "relief":  # native px -> the dataset crops' scale
        p["radius"] = p["radius"] * RELIEF_SCALE
        p["grain"] = p["grain"] * RELIEF_SCALE
    return p


# long by design: the frame loop (arrivals, motion, optics, truth) shares its state; split, it would pass a dozen arrays
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
    optics: _Optics = (_Relief if pre.optics == "relief" else _Brightfield)(pre, sid, height, width, rng)
    win = optics.window
    wall_c = optics.wall_c
    yc, half_w = (height - 1) / 2, max(8.0, (wall_c[0, 1] - wall_c[0, 0]) / 2 - 12)
    cells: list[_Cell] = []
    next_id = 0

    def spawn(x: float | None, y: float, behind: _Cell | None = None) -> _Cell:
        """A new cell at (x, y); x None (relief): just out of view, or close behind `behind`."""
        nonlocal next_id
        cls = int(rng.integers(0, len(pre.classes)))
        p = _sample(pre, cls, rng)
        half = float(p["radius"][0] * np.sqrt(p["aspect"][0]) * (1 + 3 * p["roughness"][0])) + _HALO_PAD
        if x is None:
            x = (-half - rng.uniform(0, flow_px_per_frame) if behind is None
                 else behind.x - behind.half - half - rng.uniform(2, 14))
        speed = flow_px_per_frame * (1.0 - 0.3 * ((y - yc) / (half_w + 12)) ** 2)  # Poiseuille
        cells.append(_Cell(next_id, cls, x, y, speed, half, p))
        next_id += 1
        return cells[-1]

    def lane(around: float = yc, sd: float | None = None) -> float:
        sd = sd or (half_w / 2.5 if optics.focus_sd is None else optics.focus_sd)
        return float(np.clip(around + rng.normal(0, sd), yc - half_w, yc + half_w))

    for k in range(n_frames):
        for _ in range(rng.poisson(cell_rate)):
            y = lane()
            if optics.focus_sd is None:
                x = -14.0 - rng.uniform(0, flow_px_per_frame)
                first = spawn(x, y)
                if rng.random() < p_pair:  # a second cell close behind, travelling with it (a doublet)
                    second = spawn(x - rng.uniform(18, 30), lane(y, 5.0))
                    second.speed = first.speed
            else:
                first = spawn(None, y)
                if rng.random() < p_pair:
                    second = spawn(None, lane(y, 2.0), behind=first)
                    second.speed = first.speed
        a, ph = optics.static_a.copy(), optics.static_p.copy()
        truth_raw = []
        frng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(21, k)))
        for c in cells:
            ix, iy = int(np.floor(c.x)), int(np.floor(c.y))
            ctr = np.array([[(win - 1) / 2 + (c.x - ix), (win - 1) / 2 + (c.y - iy)]])
            # the same per-cell generator every frame: the cell keeps its texture as it moves
            crng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(22, c.cell_id)))
            ca, cp = optics.cell(c.params, ctr, crng)
            x0 = ix + _MARGIN - (win - 1) // 2
            y0 = iy + _MARGIN - (win - 1) // 2
            sx0, sy0 = max(0, -x0), max(0, -y0)
            sx1, sy1 = min(win, optics.wc - x0), min(win, optics.hc - y0)
            if sx1 > sx0 and sy1 > sy0:
                a[y0 + sy0:y0 + sy1, x0 + sx0:x0 + sx1] += ca[0, sy0:sy1, sx0:sx1]
                ph[y0 + sy0:y0 + sy1, x0 + sx0:x0 + sx1] += cp[0, sy0:sy1, sx0:sx1]
            full = (c.x - c.half, c.y - c.half, c.x + c.half + 1, c.y + c.half + 1)
            box = (max(0, int(np.floor(full[0]))), max(0, int(np.floor(full[1]))),
                   min(width, int(np.ceil(full[2]))), min(height, int(np.ceil(full[3]))))
            if box[2] - box[0] >= 4 and box[3] - box[1] >= 4:
                whole = full[0] >= 0 and full[1] >= 0 and full[2] <= width and full[3] <= height
                truth_raw.append((c, box, whole))
        img = np.clip(np.rint(optics.image(a, ph, frng)), 0, 255)
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

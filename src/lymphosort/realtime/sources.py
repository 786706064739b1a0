"""Frame sources: LymphoSim flow sequences (with ground truth), image folders, video files.

Every source satisfies `FrameSource`: an iterable of `Frame`s plus a nominal `fps`, so a
camera driver only has to yield frames. A source never paces itself; the
runner does (frames due at `fps` in real time, or as fast as possible).

Time units: `Frame.t_s` is seconds on the source clock (frame index / fps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from lymphosort.data.synth.flow import CellTruth
from lymphosort.errors import ConfigError, LymphosortError

__all__ = [
    "IMAGE_SUFFIXES",
    "Frame",
    "FolderSource",
    "FrameSource",
    "SimConfig",
    "SimSource",
    "SourceError",
    "VideoSource",
    "load_grey",
    "open_source",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")


class SourceError(LymphosortError, OSError):
    """A source cannot be opened or read (missing path, unreadable file, no video reader)."""


@dataclass(frozen=True)
class Frame:
    """One camera frame. `sequence` changes at a discontinuity (e.g. a replayed pool wraps):
    the tracker drops its tracks and the evaluator scores each sequence separately."""

    index: int  # global frame counter of the source (gaps mean frames were never produced)
    t_s: float  # acquisition time on the source clock, seconds
    image: np.ndarray  # uint8 [H, W]
    truth: list[CellTruth] | None = None  # ground truth when the source knows it
    sequence: int = 0


@runtime_checkable
class FrameSource(Protocol):
    """What the runner needs from a camera: frames in order and the nominal frame rate."""

    @property
    def fps(self) -> float | None: ...  # None: unknown (replay as fast as possible)

    def __iter__(self) -> Iterator[Frame]: ...


def load_grey(path: str | Path) -> np.ndarray:
    """An image file as uint8 [H, W] (RGB-grey converted with PIL's 'L'; .npy must be 2-D uint8)."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"no such image file: {p}")
    if p.suffix.lower() == ".npy":
        a = np.load(p, allow_pickle=False)
    else:
        from PIL import Image

        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert("L"))
        except OSError as exc:
            raise SourceError(f"cannot read image {p}: {exc}") from None
    if a.ndim != 2 or a.dtype != np.uint8:
        raise SourceError(f"{p}: expected a 2-D uint8 grey image, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


@dataclass(frozen=True)
class SimConfig:
    """A LymphoSim flow stream. Defaults are the fast-flow operating point of the throughput
    benchmark on LymphoSim 3.x frames (a ~50 px cell): cells move 128 px/frame (seen ~2 times
    in a 320 px strip) and 0.8 arrivals per frame (0.92 cells with doublets: denser and the
    cells touch; 1.7, the 2.x point, gave detection recall 0.40) at 5,500 frames/s: ~5,060
    cells/s offered. Few fast frames per cell keep the per-frame cost (detection over the
    whole strip) small per decision."""

    preset: str = "default"
    seed: int = 0
    height: int = 96
    width: int = 320
    fps: float = 5500.0
    flow_px_per_frame: float = 128.0
    cell_rate: float = 0.8  # mean arrivals per frame (Poisson)
    p_pair: float = 0.15
    session: int | None = None
    #: frames rendered once and replayed cyclically (rendering is slower than the pipeline);
    #: 0 renders every frame on the fly (slow, but no repetition)
    pool_frames: int = 1500
    max_frames: int | None = None  # None: endless when replaying a pool

    @property
    def cells_per_s(self) -> float:
        return self.cell_rate * (1 + self.p_pair) * self.fps


class SimSource:
    """LymphoSim frames with ground truth; pre-rendered pool replayed, or rendered live.

    Each pool replay is a new `sequence` (the pool's first and last frames do not join up).
    `render_s` records how long rendering took, reported apart from the pipeline.
    """

    def __init__(self, config: SimConfig = SimConfig()) -> None:
        self.config = config
        self.render_s = 0.0
        self._pool: list[tuple[np.ndarray, list[CellTruth]]] | None = None
        if config.pool_frames < 0:
            raise ConfigError("pool_frames must be >= 0")
        if config.pool_frames:
            self._render_pool()

    @property
    def fps(self) -> float:
        return self.config.fps

    @property
    def flow_px_per_frame(self) -> float:
        return self.config.flow_px_per_frame

    def _frames(self, n: int) -> Iterator:
        from lymphosort.data.synth import render_flow

        c = self.config
        return render_flow(n, seed=c.seed, preset=c.preset, height=c.height, width=c.width, fps=c.fps,
                           flow_px_per_frame=c.flow_px_per_frame, cell_rate=c.cell_rate, p_pair=c.p_pair,
                           session=c.session)

    def _render_pool(self) -> None:
        t = time.perf_counter()
        self._pool = [(f.image, f.truth) for f in self._frames(self.config.pool_frames)]
        self.render_s = time.perf_counter() - t

    def __iter__(self) -> Iterator[Frame]:
        c = self.config
        limit = c.max_frames if c.max_frames is not None else (None if self._pool else 10**9)
        if self._pool is None:  # live rendering: one sequence, as long as max_frames
            t = time.perf_counter()
            for f in self._frames(int(limit) if limit is not None else 10**9):
                self.render_s += time.perf_counter() - t
                yield Frame(f.index, f.index / c.fps, f.image, f.truth, 0)
                t = time.perf_counter()
            return
        n_pool, k = len(self._pool), 0
        while limit is None or k < limit:
            img, truth = self._pool[k % n_pool]
            yield Frame(k, k / c.fps, img, truth, k // n_pool)
            k += 1


class FolderSource:
    """Image files of a folder, in name order, as frames (no ground truth)."""

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise SourceError(f"not a folder: {self.path}")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {self.path}")
        self._fps = fps

    @property
    def fps(self) -> float | None:
        return self._fps

    def __iter__(self) -> Iterator[Frame]:
        rate = self._fps or 1.0
        shape = None
        for i, p in enumerate(self.files):
            img = load_grey(p)
            if shape is not None and img.shape != shape:
                raise SourceError(f"{p}: frame size {img.shape} differs from the first frame's {shape}")
            shape = img.shape
            yield Frame(i, i / rate, img)


class VideoSource:
    """A video file, decoded by imageio (v3) or PyAV when one of them is installed."""

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"no such video file: {self.path}")
        self._fps = fps
        self._reader = self._pick_reader()

    @property
    def fps(self) -> float | None:
        return self._fps

    def _pick_reader(self) -> str:
        import importlib.util

        for mod in ("imageio", "av"):
            if importlib.util.find_spec(mod) is not None:
                return mod
        raise SourceError(
            f"cannot read video {self.path.name}: install the optional 'imageio' (with imageio-ffmpeg) or 'av' "
            "package, or extract the frames into a folder and pass the folder as --source")

    def _decoded(self) -> Iterator[np.ndarray]:
        if self._reader == "imageio":
            import imageio.v3 as iio

            yield from iio.imiter(self.path)
        else:
            import av

            with av.open(str(self.path)) as container:
                for fr in container.decode(video=0):
                    yield fr.to_ndarray(format="gray")

    def __iter__(self) -> Iterator[Frame]:
        rate = self._fps or 1.0
        for i, a in enumerate(self._decoded()):
            a = np.asarray(a)
            if a.ndim == 3:  # RGB(A) -> grey, ITU-R 601 luma as PIL's 'L'
                a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            yield Frame(i, i / rate, np.clip(np.rint(a), 0, 255).astype(np.uint8))


def open_source(spec: str | Path, *, sim: SimConfig | None = None, fps: float | None = None) -> FrameSource:
    """'sim' -> `SimSource(sim)`; a folder -> `FolderSource`; an image file -> a one-frame
    folder-like source; any other file -> `VideoSource`."""
    if str(spec) == "sim":
        return SimSource(sim or SimConfig())
    p = Path(spec)
    if p.is_dir():
        return FolderSource(p, fps=fps)
    if not p.exists():
        raise SourceError(f"--source {spec!s}: neither 'sim' nor an existing folder or file")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return _StillSource(p)
    return VideoSource(p, fps=fps)


class _StillSource:
    """A single image as a one-frame source."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def fps(self) -> float | None:
        return None

    def __iter__(self) -> Iterator[Frame]:
        yield Frame(0, 0.0, load_grey(self.path))

"""Classifier backends: one interface, `predict_proba(crops_uint8[N,64,64]) -> [N, C]`.

- `torch`: a run folder (model.safetensors + model.json), `to_model_input` + softmax.
- `onnx`: an `lymphosort export onnx` folder (model.onnx + model.json), ONNX Runtime with
  1 intra-op thread by default (predictable latency; the sorter is one core per stream).
- `hls`: an hls (or rtl) export folder through `export.fixedpoint.load_fixedpoint`: the
  integer network, bit-exact with the FPGA design; the folder's model.json supplies the classes.
- `rtl`: an `lymphosort export rtl` folder: the Verilog design itself, cycle-accurate in its
  Verilator simulator (one simulator run per call: slow, a check that the hardware decides
  as the integer backend does).

Every backend reads the preprocessing from the model card; none re-declares it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from lymphosort.errors import ConfigError, LymphosortError
from lymphosort.realtime.crop import CROP_SIZE, Preprocessor

__all__ = ["BACKENDS", "Backend", "BackendError", "load_backend", "register_backend", "softmax"]


class BackendError(LymphosortError, RuntimeError):
    """A backend cannot load its model folder (missing files, missing optional package)."""


@runtime_checkable
class Backend(Protocol):
    name: str
    classes: list[str]
    card: dict[str, Any]  # the model card (model.json) as a dict

    def predict_proba(self, crops: np.ndarray) -> np.ndarray: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax in float32 (logits of a few classes: no overflow after the max shift).

    A frame's batch (a few cells, 2-3 classes) goes through Python floats: five numpy calls
    cost ~5 us whatever the size, the loop ~1 us (the two differ in the last float32 bit)."""
    if logits.size <= 32:
        out = []
        for row in logits.tolist():
            m = max(row)
            e = [math.exp(v - m) for v in row]
            s = sum(e)
            out.append([v / s for v in e])
        return np.array(out, np.float32).reshape(logits.shape)
    e = np.exp(logits - logits.max(axis=1, keepdims=True), dtype=np.float32)
    e /= e.sum(axis=1, keepdims=True)
    return e


BACKENDS: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    def deco(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        BACKENDS[name] = factory
        return factory

    return deco


def load_backend(name: str, path: str | Path, *, threads: int = 1) -> Backend:
    """Open the model folder `path` with backend `name` (see `BACKENDS`)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    p = Path(path)
    if not p.is_dir():
        raise BackendError(f"--model {p}: not a folder")
    return BACKENDS[name](p, threads=threads)


def _read_card(folder: Path) -> dict[str, Any]:
    f = folder / "model.json"
    if not f.is_file():
        raise BackendError(f"{folder} has no model.json (the model card with classes and preprocessing)")
    return json.loads(f.read_text(encoding="utf-8"))


def _classes(card: dict[str, Any]) -> list[str]:
    classes = list(card.get("classes") or [])
    if not classes:
        n = int(card.get("spec", {}).get("num_classes", 2))
        classes = [str(i) for i in range(n)]
    return classes


def _preprocessor(card: dict[str, Any]) -> Preprocessor:
    spec = card.get("spec", {})
    try:
        fov = spec.get("fov")
        return Preprocessor(int(spec["input_size"]), float(spec["mean"]), float(spec["std"]), CROP_SIZE,
                            fov=None if fov is None else int(fov))
    except KeyError as exc:
        raise BackendError(f"model card spec lacks {exc}; cannot prepare the input") from None


def _check(crops: np.ndarray) -> None:
    if crops.dtype != np.uint8 or crops.ndim != 3:
        raise ValueError(f"expected uint8 [N, H, W] crops, got {crops.dtype} {crops.shape}")


@register_backend("torch")
class TorchBackend:
    """PyTorch on the CPU with `threads` threads (for reference and for GPU-less checks)."""

    name = "torch"

    def __init__(self, run: Path, *, threads: int = 1) -> None:
        import torch

        from lymphosort.models.checkpoint import load_checkpoint

        if not (run / "model.safetensors").is_file():
            raise BackendError(f"{run} has no model.safetensors; the torch backend needs a run folder")
        from lymphosort.threads import configure_threads

        self._torch = torch
        configure_threads(max(1, int(threads)))
        self.model, card = load_checkpoint(run)
        self.model.eval()
        self.card = card.to_dict()
        self.classes = _classes(self.card)
        self.spec = self.model.spec

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        _check(crops)
        if len(crops) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        with self._torch.inference_mode():
            x = self.spec.prepare(self._torch.from_numpy(crops))
            return softmax(self.model(x).float().numpy())


@register_backend("onnx")
class OnnxBackend:
    """ONNX Runtime (CPU) on an `export onnx` folder; numpy preprocessing (no torch per call)."""

    name = "onnx"
    MAX_BOUND_BATCH = 8  # batch sizes up to this get their own IOBinding (a frame holds a few cells)

    def __init__(self, folder: Path, *, threads: int = 1) -> None:
        onnx_file = folder / "model.onnx"
        if not onnx_file.is_file():
            raise BackendError(f"{folder} has no model.onnx; make one with `lymphosort export onnx RUN --out DIR`")
        try:
            from lymphosort.export.onnx import onnx_session
        except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
            raise BackendError(f"the onnx backend needs onnxruntime: {exc}") from None
        self.card = _read_card(folder)
        self.classes = _classes(self.card)
        self._pre = _preprocessor(self.card)
        self._sess = onnx_session(onnx_file, threads=threads)
        self._in = self._sess.get_inputs()[0].name
        out = self._sess.get_outputs()[0]
        self._out = out.name
        # Per-frame batches (a few cells) go through an IOBinding with a preallocated output
        # per batch size: ~4 us less per call than `run` (its checks and output allocation).
        self._n_out = out.shape[1] if out.type == "tensor(float)" and isinstance(out.shape[1], int) else None
        self._bound: dict[int, tuple[Any, np.ndarray]] = {}

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        _check(crops)
        n = len(crops)
        if n == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        x = self._pre(crops)
        if self._n_out is None or n > self.MAX_BOUND_BATCH:
            return softmax(self._sess.run([self._out], {self._in: x})[0])
        bound = self._bound.get(n)
        if bound is None:
            io, logits = self._sess.io_binding(), np.empty((n, self._n_out), np.float32)
            io.bind_output(self._out, "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
            bound = self._bound[n] = (io, logits)
        io, logits = bound
        io.bind_cpu_input(self._in, x)
        self._sess.run_with_iobinding(io)
        return softmax(logits)  # a new array: the bound buffer is reused by the next call


@register_backend("hls")
class HlsBackend:
    """Bit-exact fixed-point model of the FPGA design, from an hls export bundle."""

    name = "hls"

    def __init__(self, bundle: Path, *, threads: int = 1) -> None:
        try:
            from lymphosort.export.fixedpoint import load_fixedpoint  # type: ignore[import-not-found]
        except ImportError as exc:
            raise BackendError(
                f"the hls backend needs lymphosort.export.fixedpoint (bit-exact fast path) which is not available: {exc}"
            ) from None
        self._fx = load_fixedpoint(bundle)
        card = getattr(self._fx, "card", None)
        if card is None:
            card = _read_card(bundle)
        self.card = card.to_dict() if hasattr(card, "to_dict") else dict(card)
        self.classes = list(getattr(self._fx, "classes", None) or _classes(self.card))

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        _check(crops)
        if len(crops) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return softmax(np.asarray(self._fx.predict_logits(crops), dtype=np.float32))


@register_backend("rtl")
class RtlBackend:
    """The exported Verilog, simulated cycle-accurately by the folder's Verilator build."""

    name = "rtl"

    def __init__(self, folder: Path, *, threads: int = 1) -> None:
        import tempfile

        from lymphosort.export.fixedpoint import load_fixedpoint
        from lymphosort.export.rtl.flow import RTL_JSON, TOP

        exe = folder / "sim" / "obj_dir" / f"V{TOP}"
        if not (folder / RTL_JSON).is_file() or not exe.is_file():
            raise BackendError(f"{folder} is not a checked `lymphosort export rtl` folder (needs {RTL_JSON} and "
                               f"the Verilator build sim/obj_dir/V{TOP})")
        self._fx, self._exe = load_fixedpoint(folder), exe
        self.card = _read_card(folder)
        self.classes = list(getattr(self._fx, "classes", None) or _classes(self.card))
        self._n_out = len(self.classes)
        self._scale = 2.0 ** self._fx.layers[-1].acc_exp  # the design's logits are in accumulator units
        self._work = Path(tempfile.mkdtemp(prefix="lymphosort-rtl-"))

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        from lymphosort.export.rtl.flow import frames_of
        from lymphosort.export.rtl.sim import simulate

        _check(crops)
        if len(crops) == 0:
            return np.zeros((0, self._n_out), np.float32)
        res = simulate(self._exe, frames_of(self._fx, crops), self._n_out, self._work)
        return softmax((res.logits * self._scale).astype(np.float32))

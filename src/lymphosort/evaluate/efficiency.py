"""Model cost: parameters, MACs (fvcore) and side-by-side CPU latency.

MACs: fvcore's `FlopCountAnalysis` counts one fused multiply-add as one "flop" for conv and
linear layers, so its total is a MAC count (it also adds small per-element counts for
batch norm and pooling, and skips element-wise ops such as ReLU). Counted at batch 1.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["count_macs", "count_params", "measure_latency"]

log = logging.getLogger(__name__)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with requires_grad)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def _input_shape(model: nn.Module, input_size: int | Sequence[int] | None) -> tuple[int, ...]:
    if input_size is None:
        input_size = int(model.spec.input_size)  # type: ignore[union-attr]
    if isinstance(input_size, int):
        return (1, 1, input_size, input_size)
    return (1, 1, *[int(s) for s in input_size])


def count_macs(model: nn.Module, input_size: int | Sequence[int] | None = None) -> int:
    """Multiply-accumulates of one forward pass on one grey image (fvcore; see module doc).

    `input_size` defaults to the model's `spec.input_size`; an int means a square image.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(_input_shape(model, input_size), device=device)
    was_training = model.training
    model.eval()
    try:
        # fvcore traces with torch.jit, which newer torch flags as deprecated: not our concern.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            return int(analysis.total())
    finally:
        model.train(was_training)


# long by design: argument checks, runner set-up and the interleaved timing loop under one thread setting
def measure_latency(
    models: Mapping[str, nn.Module],
    batch_sizes: Sequence[int] = (1, 256),
    *,
    threads: int | None = None,
    warmup: int = 5,
    repeats: int = 20,
    input_sizes: Mapping[str, int] | None = None,
    device: str | torch.device = "cpu",
    runtime: str = "torch",
    burst: int = 5,
) -> dict:
    """Time forward passes of several models side by side in one process.

    Rounds are interleaved (each round visits every model, in a rotating order) so slow
    drifts of a shared machine hit all models alike. A visit is one untimed call, which
    brings the model back into the caches the previous model evicted, then `burst` timed
    calls: the steady state of a model that runs back to back, as a sorter's classifier
    does. Without the untimed call a small model would be timed with cold caches after a
    big one, and its ratios would depend on which other models were in the set.
    `median_ms` / `min_ms` are over `repeats` timed calls; `first_call_median_ms` is the
    median of the untimed (cold) calls, kept for reference.
    `runtime` "torch": eager PyTorch under `torch.inference_mode()` with `threads` intra-op
    threads (default: the current setting), restored afterwards. "onnxruntime": each model
    exported to ONNX and run by an ONNX Runtime CPU session with `threads` threads (default 1),
    the deployment runtime of the float students; a model that does not export (e.g. a
    Brevitas QAT model) is reported as None. Input size per model: `input_sizes[name]`, else
    `model.spec.input_size`.

    Returns `{"runtime", "threads", "device", "warmup", "repeats", "burst", "torch", "models":
    {name: {batch: {"median_ms", "min_ms", "ms_per_image", "first_call_median_ms"}} or None}}`
    with integer batch keys.
    """
    if warmup < 0 or repeats < 1 or burst < 1:
        raise ValueError("warmup must be >= 0, repeats >= 1 and burst >= 1")
    if runtime not in ("torch", "onnxruntime"):
        raise ValueError(f"runtime must be 'torch' or 'onnxruntime', got {runtime!r}")
    from lymphosort.threads import configure_threads

    dev = torch.device(device)
    prev_threads = torch.get_num_threads()
    n_threads = int(threads) if threads is not None else (prev_threads if runtime == "torch" else 1)
    names = list(models)
    result: dict = {
        "runtime": runtime,
        "threads": n_threads,
        "device": str(dev) if runtime == "torch" else "cpu",
        "warmup": warmup,
        "repeats": repeats,
        "burst": burst,
        "torch": torch.__version__,
        "models": {n: {} for n in names},
    }
    sizes = {n: (input_sizes or {}).get(n) or int(models[n].spec.input_size) for n in names}  # type: ignore[union-attr]
    modes = {n: m.training for n, m in models.items()}
    configure_threads(n_threads, announce=False)
    try:
        for m in models.values():
            m.eval()
        with torch.inference_mode(), contextlib.ExitStack() as stack:
            if runtime == "onnxruntime":
                import onnxruntime as ort

                result["onnxruntime"] = ort.__version__
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lymphosort-latency-")))
                runners = {n: _ort_runner(models[n], tmp / f"{i}.onnx", n_threads) for i, n in enumerate(names)}
                for n in [n for n, r in runners.items() if r is None]:
                    result["models"][n] = None
                names = [n for n in names if runners[n] is not None]
            else:
                runners = {n: _torch_runner(models[n], dev) for n in names}
            for bs in batch_sizes:
                calls = {n: runners[n](int(bs), sizes[n]) for n in names}  # type: ignore[misc]
                times, first = _interleaved(calls, warmup, repeats, burst)
                for n in names:
                    med = statistics.median(times[n])
                    result["models"][n][int(bs)] = {"median_ms": med, "min_ms": min(times[n]), "ms_per_image": med / int(bs),
                                                    "first_call_median_ms": statistics.median(first[n])}
    finally:
        configure_threads(prev_threads, announce=False)
        for n, m in models.items():
            m.train(modes[n])
    return result


def _torch_runner(model: nn.Module, dev: torch.device) -> Callable[[int, int], Callable[[], Any]]:
    def make(bs: int, size: int) -> Callable[[], Any]:
        x = torch.rand(bs, 1, size, size, device=dev)
        if dev.type != "cuda":
            return lambda: model(x)

        def call() -> Any:
            out = model(x)
            torch.cuda.synchronize(dev)  # time the work, not the launch
            return out

        return call

    return make


def _ort_runner(model: nn.Module, path: Path, threads: int) -> Callable[[int, int], Callable[[], Any]] | None:
    import numpy as np

    from lymphosort.export.onnx import INPUT_NAME, export_onnx, onnx_session

    try:
        export_onnx(model, path)
    except Exception as exc:  # noqa: BLE001 - any exporter failure means "no ONNX timing"
        log.info("%s does not export to plain ONNX (%s): no onnxruntime latency", type(model).__name__, exc)
        return None
    sess = onnx_session(path, threads=threads)

    def make(bs: int, size: int) -> Callable[[], Any]:
        feed = {INPUT_NAME: np.random.default_rng(0).random((bs, 1, size, size), dtype=np.float32)}
        return lambda: sess.run(None, feed)

    return make


def _interleaved(
    calls: Mapping[str, Callable[[], Any]], warmup: int, repeats: int, burst: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Milliseconds of the timed calls, and of each visit's first (cold) call, per model.

    `warmup` rounds of one untimed call per model; then rounds of visits (one first call,
    `burst` timed calls) until each model has `repeats` timed calls. Round r starts at model
    r (mod the number of models).
    """
    names = list(calls)
    times: dict[str, list[float]] = {n: [] for n in names}
    first: dict[str, list[float]] = {n: [] for n in names}

    def rotated(r: int) -> list[str]:
        return names[r % len(names):] + names[: r % len(names)]

    for r in range(warmup):
        for n in rotated(r):
            calls[n]()
    r = 0
    while len(times[names[0]]) < repeats:
        for n in rotated(r):
            for i in range(1 + min(burst, repeats - len(times[n]))):
                t0 = time.perf_counter()
                calls[n]()
                (times[n] if i else first[n]).append((time.perf_counter() - t0) * 1e3)
        r += 1
    return times, first

"""Model cost: parameters, MACs (fvcore) and side-by-side CPU latency.

MACs: fvcore's `FlopCountAnalysis` counts one fused multiply-add as one "flop" for conv and
linear layers, so its total is a MAC count (it also adds small per-element counts for
batch norm and pooling, and skips element-wise ops such as ReLU). Counted at batch 1.
"""

from __future__ import annotations

import logging
import statistics
import warnings
import time
from typing import Mapping, Sequence

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


def measure_latency(
    models: Mapping[str, nn.Module],
    batch_sizes: Sequence[int] = (1, 256),
    *,
    threads: int | None = None,
    warmup: int = 5,
    repeats: int = 20,
    input_sizes: Mapping[str, int] | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Time forward passes of several models side by side in one process.

    Rounds are interleaved (each round runs every model once, in a rotating order) so slow
    drifts of a shared machine hit all models alike; the median over `repeats` is reported.
    Runs under `torch.inference_mode()` with `threads` intra-op threads (default: the
    current setting), restored afterwards. Input size per model: `input_sizes[name]`, else
    `model.spec.input_size`.

    Returns `{"threads", "device", "warmup", "repeats", "torch", "models": {name: {batch:
    {"median_ms", "min_ms", "ms_per_image"}}}}` with integer batch keys.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError("warmup must be >= 0 and repeats >= 1")
    dev = torch.device(device)
    prev_threads = torch.get_num_threads()
    n_threads = int(threads) if threads is not None else prev_threads
    names = list(models)
    result: dict = {
        "threads": n_threads,
        "device": str(dev),
        "warmup": warmup,
        "repeats": repeats,
        "torch": torch.__version__,
        "models": {n: {} for n in names},
    }
    modes = {n: m.training for n, m in models.items()}
    torch.set_num_threads(n_threads)
    try:
        for m in models.values():
            m.eval()
        with torch.inference_mode():
            for bs in batch_sizes:
                inputs = {}
                for n in names:
                    size = (input_sizes or {}).get(n) or int(models[n].spec.input_size)  # type: ignore[union-attr]
                    inputs[n] = torch.rand(int(bs), 1, size, size, device=dev)
                times: dict[str, list[float]] = {n: [] for n in names}
                for r in range(warmup + repeats):
                    k = r % len(names)
                    for n in names[k:] + names[:k]:
                        if dev.type == "cuda":
                            torch.cuda.synchronize(dev)
                        t0 = time.perf_counter()
                        models[n](inputs[n])
                        if dev.type == "cuda":
                            torch.cuda.synchronize(dev)
                        if r >= warmup:
                            times[n].append((time.perf_counter() - t0) * 1e3)
                for n in names:
                    med = statistics.median(times[n])
                    result["models"][n][int(bs)] = {
                        "median_ms": med,
                        "min_ms": min(times[n]),
                        "ms_per_image": med / int(bs),
                    }
    finally:
        torch.set_num_threads(prev_threads)
        for n, m in models.items():
            m.train(modes[n])
    return result

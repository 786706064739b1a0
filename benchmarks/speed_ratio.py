"""Benchmark: batch-1 speed ratios between trained runs and registry architectures.

Speed does not depend on the weights, so architectures that were never trained here (e.g.
the reference ResNet-50 @120 teacher) can be timed beside trained students. Everything is
measured in this one process, interleaved, one intra-op thread, in torch eager and in ONNX
Runtime (`evaluate.efficiency.measure_latency`); ratios are against `--reference`.

    python benchmarks/speed_ratio.py --model runs/exp/teacher --model resnet18 --model paper-teacher \\
        --model runs/exp/kd/tiny-32c-kd --reference runs/exp/kd/tiny-32c-kd \\
        --out benchmarks/results/speed_ratio.json

A `--model` is a run folder (trained weights) or a registered model name (untrained).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from lymphosort.evaluate.efficiency import count_macs, count_params, measure_latency


def load_model_or_arch(ref: str) -> tuple[str, torch.nn.Module, str]:
    """(ref, model, label) for a run folder (trained weights) or a registered name (untrained)."""
    from lymphosort.models import create_model
    from lymphosort.models.checkpoint import load_checkpoint

    if Path(ref).is_dir():
        model, card = load_checkpoint(ref)
        return ref, model, f"{card.model} (trained run)"
    return ref, create_model(ref), f"{ref} (untrained: speed only)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="run folder or registered model name (repeatable)")
    ap.add_argument("--reference", required=True, help="the --model the ratios are taken against")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.reference not in args.model:
        raise SystemExit("--reference must be one of the --model values")
    loaded = [load_model_or_arch(m) for m in args.model]
    models = {key: model for key, model, _ in loaded}
    result: dict = {"command": "python benchmarks/speed_ratio.py " + " ".join(sys.argv[1:] if argv is None else argv),
                    "machine": {"platform": platform.platform(), "torch": torch.__version__}, "models": {}}
    for runtime in ("torch", "onnxruntime"):
        lat = measure_latency(models, (1,), threads=1, repeats=args.repeats, runtime=runtime)
        result[runtime] = lat
    lines = ["| model | input | params | MACs | torch b1 | ratio | ONNX Runtime b1 | ratio |", "|---|---|---|---|---|---|---|---|"]
    for key, model, label in loaded:
        row = {"label": label, "input_size": int(model.spec.input_size), "params": count_params(model),
               "macs": count_macs(model)}
        for runtime in ("torch", "onnxruntime"):
            ms, ref = result[runtime]["models"][key], result[runtime]["models"][args.reference]
            row[f"{runtime}_ms"] = ms[1]["median_ms"] if ms else None
            row[f"{runtime}_ratio"] = ms[1]["median_ms"] / ref[1]["median_ms"] if ms and ref else None
        result["models"][key] = row
        lines.append(f"| {label} | {row['input_size']} | {row['params']:,} | {row['macs'] / 1e6:.2f} M | "
                     f"{row['torch_ms']:.3f} ms | {row['torch_ratio']:.1f}x | {row['onnxruntime_ms']:.3f} ms | "
                     f"{row['onnxruntime_ratio']:.1f}x |")
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        from lymphosort.atomic import write_text_atomic  # a killed run leaves no half file
        write_text_atomic(args.out, json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: batch-1 speed ratios between trained runs and registry architectures.

Speed does not depend on the weights, so architectures that were never trained here (e.g.
the reference ResNet-50 @120 teacher) can be timed beside trained students. Everything is
measured in this one process, interleaved, one intra-op thread, in torch eager and in ONNX
Runtime (`evaluate.efficiency.measure_latency`); ratios are against `--reference`.

    python benchmarks/speed_ratio.py --model runs/exp/teacher --model resnet18 --model paper-teacher \\
        --model runs/exp/kd/tiny-32c-kd --reference runs/exp/kd/tiny-32c-kd \\
        --out benchmarks/results/speed_ratio.json

A `--model` is a run folder (trained weights) or a registered model name (untrained).
`--aim "AIM|FAST|SLOW|MIN"` (repeatable) records in the JSON, for BENCHMARKS.md, that model
FAST is at least MIN times faster than SLOW at batch 1 in ONNX Runtime (the deployment
runtime; torch eager beside it in the rows); `--data` and `--machine` describe the rows.
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
    ap.add_argument("--aim", action="append", default=[], metavar="AIM|FAST|SLOW|MIN",
                    help="an aim: FAST at least MIN times faster than SLOW (ONNX Runtime, batch 1)")
    ap.add_argument("--macs-aim", action="append", default=[], metavar="AIM|SMALL|BIG|MAX",
                    help="an aim: SMALL's MACs at most MAX (a fraction) of BIG's")
    ap.add_argument("--data", default="architectures only (speed does not depend on the data)")
    ap.add_argument("--machine", default="2-core build VM, CPU, one pinned core")
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
    result["aims"] = [_aim(spec, result, args) for spec in args.aim] + [_macs_aim(s, result, args) for s in args.macs_aim]
    if not result["aims"]:
        del result["aims"]
    result.update(area="students", caption=f"Speed at batch 1, one thread, one process ({args.data})",
                  rows=[{"model": r["label"], "input": r["input_size"], "params": r["params"],
                         "MACs (M)": round(r["macs"] / 1e6, 2),
                         "torch b1 (ms)": round(r["torch_ms"], 3), "x reference (torch)": round(r["torch_ratio"], 1),
                         "ONNX Runtime b1 (ms)": round(r["onnxruntime_ms"], 3) if r["onnxruntime_ms"] else None,
                         "x reference (ORT)": round(r["onnxruntime_ratio"], 1) if r["onnxruntime_ratio"] else None}
                        for r in result["models"].values()])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        from lymphosort.atomic import write_text_atomic  # a killed run leaves no half file
        write_text_atomic(args.out, json.dumps(result, indent=2, default=str))
    return 0


def _spec(spec: str, flag: str, usage: str) -> tuple[str, str, str, float]:
    """'LABEL|A|B|NUMBER' of an aim flag, or a clear exit."""
    try:
        label, a, b, number = spec.split("|")
        return label, a, b, float(number)
    except ValueError:
        raise SystemExit(f"bad {flag} {spec!r}: use '{usage}'") from None


def _aim(spec: str, result: dict, args: argparse.Namespace) -> dict:
    """A BENCHMARKS.md aim: FAST's speed-up over SLOW in ONNX Runtime at batch 1 (torch beside)."""
    label, fast, slow, least_x = _spec(spec, "--aim", "AIM|FAST|SLOW|MIN")
    ms = {rt: result[rt]["models"] for rt in ("torch", "onnxruntime")}
    ratio = {rt: ms[rt][slow][1]["median_ms"] / ms[rt][fast][1]["median_ms"] for rt in ms if ms[rt][fast] and ms[rt][slow]}
    value = ratio.get("onnxruntime", ratio.get("torch"))
    return {"area": "students", "aim": f"{label} (ONNX Runtime; torch eager: {ratio.get('torch', float('nan')):.1f}x)",
            "target": f">= {least_x:g}x", "value": round(value, 1), "unit": "x", "met": bool(value >= least_x),
            "data": args.data, "command": result["command"], "machine": args.machine}


def _macs_aim(spec: str, result: dict, args: argparse.Namespace) -> dict:
    """A BENCHMARKS.md aim: SMALL's multiply-accumulates as a fraction of BIG's (fvcore count)."""
    label, small, big, most_f = _spec(spec, "--macs-aim", "AIM|SMALL|BIG|MAX")
    frac = result["models"][small]["macs"] / result["models"][big]["macs"]
    return {"area": "students", "aim": label, "target": f"<= {100 * most_f:g}%", "value": round(100 * frac, 1),
            "unit": "%", "met": bool(frac <= most_f), "data": args.data, "command": result["command"],
            "machine": args.machine}


if __name__ == "__main__":
    sys.exit(main())

"""The slow full export check: float ONNX and the hls4ml bundle of trained runs, on >= 2,000
test crops, with the integer fast path's speed against the emulation. Writes JSON.

    python benchmarks/export_check.py --float-run RUN --qat-run QRUN --data-root DIR \
        [--n-check 2000] [--clock-ns 5] [--out benchmarks/results/export_check] [--results FILE]

With both runs, `--results FILE` also writes the deployment aims for BENCHMARKS.md (QAT twin
against its float student, hls4ml bit-exactness; the hls4ml latency estimate as a row, not an aim).

Without runs it checks a randomly initialised tiny-32-q8 on random crops (the path, not accuracy).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--float-run", type=Path, default=None)
    p.add_argument("--qat-run", type=Path, default=None)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--n-check", type=int, default=2000)
    p.add_argument("--clock-ns", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/export_check"))
    p.add_argument("--results", type=Path, default=None, help="write the deployment aims here (needs both runs)")
    a = p.parse_args()

    import torch

    from lymphosort.export.bundle import export_hls_run
    from lymphosort.export.config import HlsExportConfig, OnnxExportConfig
    from lymphosort.export.run import export_onnx_run
    from lymphosort.models import create_model
    from lymphosort.models.checkpoint import ModelCard, save_checkpoint

    a.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"n_check": a.n_check, "clock_ns": a.clock_ns}
    tmp = Path(tempfile.mkdtemp())
    for key, run, name in (("onnx", a.float_run, "tiny-32"), ("hls", a.qat_run, "tiny-32-q8")):
        if run is None:
            torch.manual_seed(0)
            m = create_model(name).eval()
            run = save_checkpoint(tmp / name, m, ModelCard.from_model(m, task="t4-vs-b", classes=["B", "T4"]))
        t0 = time.perf_counter()
        if key == "onnx":
            r = export_onnx_run(run, a.out / "onnx", OnnxExportConfig(data_root=a.data_root and str(a.data_root), n_check=a.n_check))
        else:
            r = export_hls_run(run, a.out / "hls", HlsExportConfig(data_root=a.data_root and str(a.data_root), n_check=a.n_check,
                                                                   clock_ns=a.clock_ns))
        r["wall_s"] = time.perf_counter() - t0
        result[key] = r
        print(key, {k: r.get(k) for k in ("model", "n_checked", "max_abs_diff", "agreement", "argmax_agreement",
                                          "latency_us_estimate", "speed")})
    from lymphosort.atomic import write_text_atomic  # a killed run leaves no half file
    write_text_atomic(a.out / "export_check.json", json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {a.out / 'export_check.json'}")
    if a.results is not None:
        if a.float_run is None or a.qat_run is None or a.data_root is None:
            raise SystemExit("--results needs --float-run, --qat-run and --data-root")
        write_text_atomic(a.results, json.dumps(_aims(a, result), indent=2) + "\n")
        print(f"wrote {a.results}")
    return 0


def _aims(a: argparse.Namespace, result: dict) -> dict:
    """The deployment rows of BENCHMARKS.md from this check and the two runs' test metrics."""
    import platform
    import sys

    prov = json.loads((a.data_root / "LymphoMNIST" / "provenance.json").read_text())
    data = f"LymphoSim {prov['version']} {prov['preset']} (simulated), T4 vs B test"
    acc = {k: json.loads((run / "metrics.json").read_text())["accuracy"] * 100 for k, run in
           (("float", a.float_run), ("qat", a.qat_run))}
    command = "python benchmarks/export_check.py " + " ".join(sys.argv[1:])
    from runs_table import run_command  # benchmarks/ is on the path of a benchmark script

    qat_cmd = run_command(a.qat_run) or f"(the run {a.qat_run})"
    machine = f"2-core build VM, CPU ({platform.machine()})"
    hls, onnx = result["hls"], result["onnx"]
    gap = round(acc["float"] - acc["qat"], 2)

    def aim(text: str, target: str, value: object, met: bool, cmd: str, unit: str | None = None) -> dict:
        out = {"area": "deployment", "aim": text, "target": target, "value": value, "met": bool(met), "data": data,
               "command": cmd, "machine": machine}
        return out | ({"unit": unit} if unit else {})

    return {
        "area": "deployment", "caption": f"Deployment of the default student ({hls['model']} is its QAT twin), {data}",
        "commands": [command],
        "aims": [
            aim(f"8-bit QAT twin vs its float student ({acc['qat']:.2f}% vs {acc['float']:.2f}%)", "within 0.5 points",
                abs(gap), abs(gap) <= 0.5, qat_cmd, "points"),
            aim("hls4ml emulation equal to the integer evaluator, bit for bit", ">= 2,000 crops",
                f"{round(hls['agreement'] * hls['n_checked'])} of {hls['n_checked']}",
                hls.get("bit_exact") and hls["n_checked"] >= 2000, command),
        ],  # the hls4ml latency is an estimate (no Vitis here): a row, not an aim; the measured one is RTL's
        "rows": [
            {"model": f"{onnx['model']} (float)", "accuracy %": round(acc["float"], 2),
             "check": f"ONNX max |diff| {onnx['max_abs_diff']:.1e} on {onnx['n_checked']} crops"},
            {"model": f"{hls['model']} (QAT twin)", "accuracy %": round(acc["qat"], 2),
             "check": f"hls4ml emulation == integer path on {hls['n_checked']} crops: {bool(hls.get('bit_exact'))}; "
                      f"stream latency ESTIMATE {hls['latency_us_estimate']:.2f} us at {a.clock_ns:g} ns (not "
                      "synthesised: no Vitis here; measured latency: the open RTL rows)"},
        ],
    }


if __name__ == "__main__":
    raise SystemExit(main())

"""The slow full export check: float ONNX and the hls4ml bundle of trained runs, on >= 2,000
test crops, with the integer fast path's speed against the emulation. Writes JSON.

    python benchmarks/export_check.py --float-run RUN --qat-run QRUN --data-root DIR \
        [--n-check 2000] [--clock-ns 5] [--out benchmarks/results/export_check]

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

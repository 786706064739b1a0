"""Reproducer of the sorter path's former rare precision collapse (fixed: docs/realtime.md).

Paced runs of the one-core path, each followed by the state that went wrong in collapsed runs:
the tracker's speed prior per y-band and the detector background's range. Run two at once,
one per core, to make it likely (2-3 of 8 runs collapsed on the 2-core build VM):

    python benchmarks/realtime_collapse_repro.py --cpu 0 --runs 4 & \\
    python benchmarks/realtime_collapse_repro.py --cpu 1 --runs 4
"""

from __future__ import annotations

import argparse
import os

from lymphosort.realtime import Gate, RealtimeRunner, RunConfig, SimConfig, SimSource, load_backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/v3.1/export/tiny-32-whole-e8-onnx")
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--fps", type=float, default=7000.0)
    ap.add_argument("--cell-rate", type=float, default=1.4)
    ap.add_argument("--duration", type=float, default=30.0)
    a = ap.parse_args()
    os.sched_setaffinity(0, {a.cpu})
    backend = load_backend("onnx", a.model)
    for i in range(a.runs):
        runner = RealtimeRunner(SimSource(SimConfig(cell_rate=a.cell_rate, fps=a.fps)), backend, Gate(1, 0.5), None,
                                RunConfig(duration_s=a.duration, realtime=True, queue_size=4, drop="oldest"))
        rep = runner.run()
        bg = runner.detector._bg
        print(f"run {i}: precision {rep['detection_precision']:.3f} recall {rep['detection_recall']:.3f} "
              f"dropped {rep['dropped_frames']} max latency {rep['max_latency_us']:.0f} us | speed prior "
              f"{[round(v) for v in runner.tracker._band_v or []]} (n {[round(v) for v in runner.tracker._band_n or []]})"
              f" | background {float(bg.min()):.0f}-{float(bg.max()):.0f}", flush=True)


if __name__ == "__main__":
    main()

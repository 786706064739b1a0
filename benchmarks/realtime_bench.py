"""Real-time sorting path benchmarks: throughput/latency on one core, and crop accuracy.

throughput (default): pre-render a LymphoSim pool (timed and reported apart), then replay
it paced in real time at --fps for --duration seconds through the full pipeline (detect,
track, crop, classify, gate) on one pinned CPU core; report what the pipeline achieved
(cells/s decided, p50/p99/max latency from frame arrival to decision, dropped frames) and
the ground-truth scores. Writes JSON and prints a markdown row with the command.

    python benchmarks/realtime_bench.py throughput --model EXPORT_ONNX_DIR --backend onnx \\
        --duration 30 --out runs/realtime_bench.json

workers: the same paced stream decided by 1, 2, ... worker processes side by side in one
benchmark run (N workers: a camera imaging N channels, one lane each; `realtime.workers`),
with the scaling ratio against one worker:

    python benchmarks/realtime_bench.py workers --model EXPORT_ONNX_DIR --workers 1,2 --duration 30 \
        --out benchmarks/results/realtime_workers_v3.json

points: throughput at several operating points of the stream (arrivals per frame @ frames/s),
each paced for --duration on the pinned core, one after another in one benchmark run; the
aim is the most cells/s decided at a point that keeps p99 <= 1 ms, detection P/R >= 0.99 and
drops <= 0.5%:

    python benchmarks/realtime_bench.py points --model EXPORT_ONNX_DIR --points 0.8@5500,1.4@5500,1.4@6800 \
        --out benchmarks/results/realtime_operating_points_v3.1.json

accuracy: the classifier's accuracy on crops the pipeline detected in LymphoSim streams
versus on LymphoSim test crops of the same sessions (the dataset's held-out test sessions
when the model card names a simulated data set), and whether they agree within 1 point.

    python benchmarks/realtime_bench.py accuracy --model RUN_OR_EXPORT --backend onnx --out runs/rt_acc.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _pin(cpu: int | None) -> list[int] | None:
    """Pin this process to one core (and every library to one thread) for an honest 1-core number."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _env() -> dict[str, Any]:
    import onnxruntime
    import scipy

    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "onnxruntime": onnxruntime.__version__, "cpu": cpu, "cpus_online": os.cpu_count(),
            "loadavg_before": os.getloadavg() if hasattr(os, "getloadavg") else None}


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from lymphosort.realtime import Gate, RealtimeRunner, RunConfig, SimConfig, SimSource, load_backend

    torch.set_num_threads(1)
    env = _env()
    env["affinity"] = _pin(args.cpu)
    backend = load_backend(args.backend, args.model, threads=1)
    classes = list(backend.classes)
    sim = SimConfig(preset=args.preset, seed=args.seed, fps=args.fps, flow_px_per_frame=args.flow_px,
                    cell_rate=args.cell_rate, p_pair=args.p_pair, pool_frames=args.pool_frames)
    source = SimSource(sim)
    cfg = RunConfig(duration_s=args.duration, realtime=not args.afap, queue_size=args.queue_size,
                    drop="block" if args.afap else "oldest")
    rep = RealtimeRunner(source, backend, Gate(len(classes) - 1, args.threshold), None, cfg).run()
    env["loadavg_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    rep["sim"] = {**vars(sim), "render_s": source.render_s, "render_frames_per_s": sim.pool_frames / source.render_s,
                  "offered_cells_per_s": sim.cells_per_s}
    rep["env"] = env
    rep["model"] = str(args.model)
    return rep


def workers(args: argparse.Namespace) -> dict[str, Any]:
    from lymphosort.realtime import RunConfig, SimConfig, load_backend
    from lymphosort.realtime.workers import LanePool, run_workers

    env = _env()
    backend = load_backend(args.backend, args.model, threads=1)
    target = len(backend.classes) - 1
    sim = SimConfig(preset=args.preset, seed=args.seed, fps=args.fps, flow_px_per_frame=args.flow_px,
                    cell_rate=args.cell_rate, p_pair=args.p_pair, pool_frames=args.pool_frames)
    cfg = RunConfig(duration_s=args.duration, realtime=True, queue_size=args.queue_size, drop="oldest")
    runs = []
    for n in sorted(int(v) for v in args.workers.split(",")):
        pool = LanePool(sim, n)
        try:
            rep = run_workers(pool, str(args.model), args.backend, workers=n, target=target,
                              threshold=args.threshold, run=cfg)
        finally:
            pool.close()
        rep.pop("events")
        runs.append(rep)
        print(f"{n} worker(s): {rep['cells_per_s']:.0f} cells/s, p99 {rep['p99_latency_us']} us, dropped "
              f"{rep['dropped_frames']}/{rep['frames']}, recall {rep['detection_recall']}", flush=True)
    env["loadavg_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    one = next((r for r in runs if r["workers"] == 1), None)
    for r in runs:
        r["scaling_vs_one_worker"] = r["cells_per_s"] / one["cells_per_s"] if one and one["cells_per_s"] else None
    return {"model": str(args.model), "backend": args.backend, "sim": vars(sim), "queue_size": cfg.queue_size,
            "runs": runs, "env": env,
            "area": "real time", "caption": "The sorter path with N decision workers (a camera imaging N channels, "
            "one lane each), paced side by side in one benchmark run",
            "rows": [{"workers": r["workers"], "cells/s decided": round(r["cells_per_s"] or 0),
                      "p99 us": r["p99_latency_us"], "dropped frames %": round(100 * (r["dropped_frame_share"] or 0), 2),
                      "det. precision": r["detection_precision"], "det. recall": r["detection_recall"],
                      "accuracy": r["accuracy"], "x one worker": round(r["scaling_vs_one_worker"] or 0, 2)}
                     for r in runs]}


def _workers_aims(rep: dict[str, Any], cmd: str) -> list[dict[str, Any]]:
    """The BENCHMARKS.md aims of issue 24 from a `workers` run (2 workers against 1)."""
    from lymphosort.data.synth import get_preset

    one, two = (next((r for r in rep["runs"] if r["workers"] == n), None) for n in (1, 2))
    if two is None:
        return []
    data = (f"LymphoSim {get_preset(rep['sim']['preset']).version} {rep['sim']['preset']} flow frames (simulated), "
            f"{rep['sim']['fps']:g} frames/s a lane, {rep.get('queue_size', 4)}-frame buffer, {rep['model']} "
            f"({rep['backend']})")
    base = {"area": "real time", "data": data, "command": cmd, "machine": "2-core build VM, CPU, idle"}
    scaling = two["scaling_vs_one_worker"]  # None when the run had no 1-worker stream
    aims = [
        {**base, "aim": f"2 workers: cells/s decided with p99 <= 500 us, drops <= 0.5%, detection P/R >= 0.99 (p99 "
         f"{two['p99_latency_us']:.0f} us, drops {100 * two['dropped_frame_share']:.2f}%, P/R "
         f"{two['detection_precision']:.3f}/{two['detection_recall']:.3f})", "target": ">= 15,000 cells/s",
         "value": round(two["cells_per_s"]), "unit": "cells/s",
         "met": _ok(two, p99_us=500, drops=0.005) and two["cells_per_s"] >= 15000}]
    if scaling is not None:
        aims.append({
            **base, "aim": "2 workers against 1 in the same run, the same rate a lane, the 2-worker run with drops "
            "<= 0.5%, p99 <= 1 ms and P/R >= 0.99 (15,000 cells/s cannot hold by construction on 2 cores: "
            "docs/realtime.md, Scaling out)", "target": ">= 1.8x (proposed)", "value": round(scaling, 2), "unit": "x",
            "met": scaling >= 1.8 and _ok(two, drops=0.005)})
    # Accuracy on the lane both runs decide: lane 2 is another flow (other sessions), whose
    # accuracy differs by its cells, not by the number of workers (on 3.4: 91.7% vs 93.8%).
    lanes = _scored_lanes(two)
    a1, a2 = (_scored_lanes(one) if one is not None else {}).get(0), lanes.get(0)
    if a1 is not None and a2 is not None:
        diff = 100 * (a2["accuracy"] - a1["accuracy"])
        others = [w for lane, w in sorted(lanes.items()) if lane != 0]
        aims.append({
            **base, "aim": f"2 workers: accuracy on lane 1's decided cells minus the one-worker run's on the same "
            f"lane ({a2['accuracy']:.2%} of {a2['accuracy_n']:,} against {a1['accuracy']:.2%} of "
            f"{a1['accuracy_n']:,}" + "".join(f"; lane {w['lane'] + 1}, another flow: {w['accuracy']:.2%}"
                                              for w in others) + ")",
            "target": "within 1 point", "value": round(diff, 2), "unit": "points", "met": abs(diff) <= 1.0})
    return aims


def _scored_lanes(run: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Lane -> its worker's record, for the lanes of a workers run that were scored."""
    return {w["lane"]: w for w in run.get("per_worker", []) if w.get("accuracy") is not None}


def _stream_data(rep: dict[str, Any]) -> str:
    from lymphosort.data.synth import get_preset

    sim = rep["sim"]
    return (f"LymphoSim {get_preset(sim['preset']).version} {sim['preset']} flow frames (simulated), "
            f"{sim['cell_rate']:g} arrivals/frame at {sim['fps']:g} frames/s, {rep['model']} ({rep['backend']})")


def _ok(rep: dict[str, Any], p99_us: float = 1000.0, drops: float | None = None) -> bool:
    """The one-core aim's conditions: p99, detection precision and recall (and drops)."""
    dropped = rep["dropped_frames"] / rep["frames"] if rep["frames"] else 1.0
    return bool((rep["p99_latency_us"] or 1e9) <= p99_us
                and min(rep["detection_precision"] or 0, rep["detection_recall"] or 0) >= 0.99
                and (drops is None or dropped <= drops))


def _throughput_aims(rep: dict[str, Any], cmd: str) -> list[dict[str, Any]]:
    """The BENCHMARKS.md aims of the one-core sorter path at the stream it ran."""
    base = {"area": "real time", "data": _stream_data(rep), "command": cmd,
            "machine": "2-core build VM, one pinned core, idle machine"}
    cells = round(rep["cells_per_s"] or 0)
    return [
        {**base, "aim": "sorter path, one core, ONNX: cells/s decided with p99 <= 1 ms and detection P/R >= 0.99",
         "target": ">= 5,000 cells/s", "value": cells, "unit": "cells/s", "met": _ok(rep) and cells >= 5000},
        {**base, "aim": "p99 latency, frame arrival to decision, at that rate", "target": "<= 1 ms",
         "value": rep["p99_latency_us"], "unit": "us", "met": (rep["p99_latency_us"] or 1e9) <= 1000},
        {**base, "aim": "detection precision / recall", "target": ">= 0.99 / >= 0.99",
         "value": f"{rep['detection_precision']:.4f} / {rep['detection_recall']:.4f}",
         "met": min(rep["detection_precision"] or 0, rep["detection_recall"] or 0) >= 0.99},
    ]


def _throughput_rows(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """The BENCHMARKS.md row of a throughput run, with where each frame's CPU time went."""
    stage = rep["stage_us_per_frame"]
    return [{"frames/s offered": rep["sim"]["fps"], "arrivals/frame": rep["sim"]["cell_rate"],
             "cells/s decided": round(rep["cells_per_s"] or 0), "p50 us": rep["p50_latency_us"],
             "p99 us": rep["p99_latency_us"], "dropped/frames": f"{rep['dropped_frames']}/{rep['frames']}",
             "det. precision": rep["detection_precision"], "det. recall": rep["detection_recall"],
             "accuracy": rep["accuracy"], "us CPU a frame": round(rep["consumer_cpu_us_per_frame"] or 0, 1),
             "us a frame: detect / track / classify / emit": " / ".join(
                 f"{stage[k]:.1f}" for k in ("detect", "track", "classify", "emit"))}]


def points(args: argparse.Namespace) -> dict[str, Any]:
    """`throughput` at each RATE@FPS of --points, one after another on the pinned core."""
    runs = []
    for spec in args.points.split(","):
        rate, _, fps = spec.partition("@")
        one = argparse.Namespace(**{**vars(args), "cell_rate": float(rate), "fps": float(fps or args.fps)})
        rep = throughput(one)
        runs.append(rep)
        print(f"{rate} arrivals/frame @ {one.fps:g} frames/s: {rep['cells_per_s']:.0f} cells/s, p99 "
              f"{rep['p99_latency_us']} us, dropped {rep['dropped_frames']}/{rep['frames']}, P/R "
              f"{rep['detection_precision']}/{rep['detection_recall']}", flush=True)
    return {"model": str(args.model), "backend": args.backend, "runs": runs, "area": "real time",
            "caption": "Operating points of the one-core sorter path (one pinned core, idle machine, paced, one after "
                       "another): denser cells raise the decisions per frame until touching cells merge",
            "rows": [{"arrivals/frame": r["sim"]["cell_rate"], "frames/s": r["sim"]["fps"],
                      "cells/s decided": round(r["cells_per_s"] or 0), "p99 us": r["p99_latency_us"],
                      "dropped frames %": round(100 * r["dropped_frames"] / max(1, r["frames"]), 2),
                      "det. precision": r["detection_precision"], "det. recall": r["detection_recall"],
                      "accuracy": r["accuracy"], "us CPU a frame": round(r["consumer_cpu_us_per_frame"] or 0, 1)}
                     for r in runs]}


def _points_aims(rep: dict[str, Any], cmd: str) -> list[dict[str, Any]]:
    ok = [r for r in rep["runs"] if _ok(r, drops=0.005)]
    best = max(ok or rep["runs"], key=lambda r: r["cells_per_s"] or 0)
    cells = round(best["cells_per_s"] or 0)
    return [{"area": "real time", "aim": "sorter path, one core, ONNX, best operating point: cells/s decided with p99 "
             f"<= 1 ms, detection P/R >= 0.99 and drops <= 0.5% (p99 {best['p99_latency_us']:.0f} us, P/R "
             f"{best['detection_precision']:.3f}/{best['detection_recall']:.3f})" + ("" if ok else ": no point qualified"),
             "target": ">= 5,000 cells/s", "value": cells, "unit": "cells/s", "met": bool(ok) and cells >= 5000,
             "data": _stream_data(best), "command": cmd, "machine": "2-core build VM, one pinned core, idle machine"}]


def _row(rep: dict[str, Any], cmd: str) -> str:
    def f(v: Any, fmt: str = "{:.0f}") -> str:
        return "n/a" if v is None else fmt.format(v)

    return (f"| {rep['backend']} | {f(rep['sim']['fps'])} | {f(rep['cells_per_s'])} | {f(rep['p50_latency_us'])} | "
            f"{f(rep['p99_latency_us'])} | {f(rep['max_latency_us'])} | {rep['dropped_frames']}/{rep['frames']} | "
            f"{f(rep['detection_precision'], '{:.4f}')} | {f(rep['detection_recall'], '{:.4f}')} | "
            f"{f(rep['accuracy'], '{:.4f}')} | {f(rep['sim']['render_frames_per_s'])} | `{cmd}` |")


HEADER = ("| backend | frames/s offered | cells/s decided | p50 us | p99 us | max us | dropped/frames | "
          "det. precision | det. recall | accuracy | sim render frames/s | command |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    from lymphosort.data.synth import get_preset, render_crops
    from lymphosort.data.synth.writer import split_sessions
    from lymphosort.realtime import Gate, RealtimeRunner, RunConfig, SimConfig, SimSource, load_backend
    from lymphosort.realtime.runner import task_label_map

    backend = load_backend(args.backend, args.model, threads=1)
    card, lm = backend.card, task_label_map(backend.card)
    if lm is None:
        raise SystemExit("the model card names no task: cannot score accuracy")
    data = card.get("data") or {}
    preset = data.get("preset") or args.preset
    if data.get("source") == "simulated" and "seed" in data:
        sessions = split_sessions(int(data["seed"]), get_preset(preset))[1][: args.sessions]
        which = f"held-out test sessions of data seed {data['seed']}"
    else:
        sessions = list(range(args.sessions))
        which = "preset sessions 0..n-1 (card names no simulated data set)"
    # 1) test crops of those sessions
    imgs, labels, _ = render_crops(args.n_crops, seed=args.seed + 1, preset=preset, sessions=sessions)
    y = np.array([lm.get(int(c), -1) for c in labels])
    keep = y >= 0
    probs = np.concatenate([backend.predict_proba(imgs[i:i + 256]) for i in range(0, len(imgs), 256)])
    acc_crops = float((probs.argmax(1)[keep] == y[keep]).mean())
    # 2) detected crops in flow streams of the same sessions (lossless replay, every cell decided)
    n_ok = n_all = 0
    per_stream = []
    for k, sid in enumerate(sessions):
        src = SimSource(SimConfig(preset=preset, seed=args.seed + 100 + k, session=sid, pool_frames=args.frames,
                                  fps=1000.0, flow_px_per_frame=args.flow_px, cell_rate=args.cell_rate * 0.5))
        rep = RealtimeRunner(src, backend, Gate(len(backend.classes) - 1), None,
                             RunConfig(max_frames=args.frames, realtime=False, drop="block")).run()
        if rep["accuracy"] is not None:
            n_ok += round(rep["accuracy"] * rep["accuracy_n"])
            n_all += rep["accuracy_n"]
        per_stream.append({"session": sid, "accuracy": rep["accuracy"], "n": rep["accuracy_n"],
                           "detection_recall": rep["detection_recall"],
                           "detection_precision": rep["detection_precision"]})
    acc_det = n_ok / n_all if n_all else None
    diff = None if acc_det is None else acc_det - acc_crops
    # binomial standard error of the difference: with ~1,000 detected crops it is ~1.3 points,
    # so "within 1 point" needs several thousand crops to mean something (raise --frames)
    se = None if not n_all else float(np.sqrt(acc_det * (1 - acc_det) / n_all + acc_crops * (1 - acc_crops) / keep.sum()))
    return {"model": str(args.model), "backend": args.backend, "preset": preset, "sessions": sessions,
            "sessions_from": which, "accuracy_test_crops": acc_crops, "n_test_crops": int(keep.sum()),
            "accuracy_detected_crops": acc_det, "n_detected_crops": n_all, "difference": diff, "se_difference": se,
            "within_1_point": None if diff is None else abs(diff) <= 0.01, "streams": per_stream}


def _accuracy_aim(rep: dict[str, Any], cmd: str) -> dict[str, Any]:
    """The BENCHMARKS.md aim: detected-crop accuracy minus test-crop accuracy, in points, with
    a normal 95% interval from the binomial standard error of the difference."""
    from lymphosort.data.synth import get_preset

    diff, se = 100 * rep["difference"], 100 * rep["se_difference"]
    return {"area": "real time", "aim": "accuracy on detected crops minus accuracy on test crops "
            f"({rep['accuracy_detected_crops']:.2%} on {rep['n_detected_crops']:,} detected, "
            f"{rep['accuracy_test_crops']:.2%} on {rep['n_test_crops']:,} test crops)",
            "target": "within 1 point", "value": round(diff, 2), "interval": [round(diff - 1.96 * se, 2),
                                                                              round(diff + 1.96 * se, 2)],
            "unit": "points", "met": bool(rep["within_1_point"]),
            "data": f"LymphoSim {get_preset(rep['preset']).version} {rep['preset']} flow frames and crops of "
                    f"{rep['sessions_from']} (simulated), {rep['model']}",
            "command": cmd, "machine": "2-core build VM, CPU"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode")
    t = sub.add_parser("throughput")
    a = sub.add_parser("accuracy")
    w = sub.add_parser("workers")
    pts = sub.add_parser("points")
    for q in (t, a, w, pts):
        q.add_argument("--model", type=Path, required=True)
        q.add_argument("--backend", default="onnx", choices=("torch", "onnx", "hls"))
        q.add_argument("--preset", default="default")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--flow-px", type=float, default=128.0)
        q.add_argument("--cell-rate", type=float, default=0.8)
        q.add_argument("--out", type=Path, default=None)
    for q in (t, w, pts):
        q.add_argument("--fps", type=float, default=5500.0)
        q.add_argument("--p-pair", type=float, default=0.15)
        q.add_argument("--duration", type=float, default=30.0)
        q.add_argument("--pool-frames", type=int, default=1500)
        q.add_argument("--queue-size", type=int, default=4)
        q.add_argument("--threshold", type=float, default=0.5)
    w.add_argument("--workers", default="1,2", help="worker counts to run side by side (default: %(default)s)")
    for q in (t, pts):
        q.add_argument("--cpu", type=int, default=None,
                       help="pin to this core (default: the first core this process may use, e.g. the one "
                            "`taskset -c N` gave it; -1: no pinning)")
        q.add_argument("--afap", action="store_true", help="as fast as possible, lossless (max throughput)")
    pts.add_argument("--points", required=True, metavar="RATE@FPS[,...]",
                     help="arrivals per frame @ frames/s, e.g. 0.8@5500,1.4@6800")
    a.add_argument("--sessions", type=int, default=4)
    a.add_argument("--frames", type=int, default=1000, help="frames per session stream")
    a.add_argument("--n-crops", type=int, default=4000)
    args = p.parse_args(argv)
    if args.mode is None:
        p.error("choose a mode: throughput, points, workers or accuracy")
    cmd = "python benchmarks/realtime_bench.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    t0 = time.perf_counter()
    if args.mode == "workers":
        rep = workers(args)
    elif args.mode in ("throughput", "points"):
        if args.cpu is None and hasattr(os, "sched_getaffinity"):
            args.cpu = min(os.sched_getaffinity(0))  # respect `taskset -c N`: never move to another core
        elif args.cpu is not None and args.cpu < 0:
            args.cpu = None
        rep = throughput(args) if args.mode == "throughput" else points(args)
    else:
        rep = accuracy(args)
    rep["command"] = cmd
    rep["bench_wall_s"] = time.perf_counter() - t0
    if args.mode == "accuracy" and rep["difference"] is not None:
        rep["aims"] = [_accuracy_aim(rep, cmd)]
    if args.mode == "workers":
        rep["aims"] = _workers_aims(rep, cmd)
    if args.mode == "throughput":
        rep["aims"] = _throughput_aims(rep, cmd)
        rep.update(area="real time", caption="The sorter path on one pinned core, paced", rows=_throughput_rows(rep))
    if args.mode == "points":
        rep["aims"] = _points_aims(rep, cmd)
    text = json.dumps(rep, indent=2, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        from lymphosort.atomic import write_text_atomic  # a killed run leaves no half file
        write_text_atomic(args.out, text + "\n", encoding="utf-8")
    if args.mode in ("workers", "points"):
        pass
    elif args.mode == "throughput":
        keys = ("frames", "frames_processed", "dropped_frames", "decisions", "cells_per_s", "p50_latency_us",
                "p99_latency_us", "max_latency_us", "late_decisions", "detection_precision", "detection_recall",
                "accuracy", "purity", "yield", "stage_us_per_frame", "classify_us_per_cell")
        print(json.dumps({k: rep.get(k) for k in keys} | {"render_frames_per_s": rep["sim"]["render_frames_per_s"],
                                                          "env": rep["env"]}, indent=1, default=str))
        print(HEADER)
        print(_row(rep, cmd))
    else:
        print(json.dumps({k: v for k, v in rep.items() if k != "streams"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`lymphosort realtime`: run the sorting pipeline on a source and write a JSON report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

__all__ = ["RUN_ONNX_CACHE", "onnx_model_folder", "register", "run_from_args"]


def register(subparsers: argparse._SubParsersAction) -> None:
    from lymphosort.realtime.sources import SimConfig  # the simulated stream's defaults (numpy only)

    p = subparsers.add_parser(
        "realtime", help="detect, track, classify and gate cells in a frame stream (CPU sorting path)",
        description="Real-time sorting path on the CPU. Latency = frame arrival to decision per cell.")
    p.add_argument("--source", default="sim", help="'sim' (LymphoSim), a folder of frames, an image or a video file")
    p.add_argument("--model", type=Path, required=True,
                   help="run folder (torch or onnx: exported once to RUN/export/onnx and reused), "
                   "`export onnx` folder (onnx) or hls bundle (hls)")
    p.add_argument("--backend", default="onnx", choices=("torch", "onnx", "hls"))
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the backend (default 1)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of stream (default %(default)s)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--events", type=Path, default=None, help="write one JSON trigger event per line here")
    p.add_argument("--quiet", action="store_true", help="no live view (also off when stdout is not a TTY)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--target-purity", type=float, default=None,
                   help="choose the threshold reaching this purity on LymphoSim calibration crops")
    g.add_argument("--threshold", type=float, default=None, help="sort when p(target) >= this (default 0.5)")
    p.add_argument("--sort-class", default=None, help="class name to sort (default: the last class)")
    p.add_argument("--as-fast-as-possible", action="store_true",
                   help="do not pace the source at its frame rate (throughput runs)")
    p.add_argument("--queue-size", type=int, default=4, help="frames buffered (~deadline x fps; default 4)")
    p.add_argument("--drop", default="oldest", choices=("oldest", "newest", "block"))
    p.add_argument("--deadline-us", type=float, default=1000.0)
    p.add_argument("--trigger-x", type=float, default=None, help="trigger line, px from the left (default 40%% of width)")
    p.add_argument("--fps", type=float, default=None, help="frame rate of the source (sim default %g)" % SimConfig.fps)
    p.add_argument("--still", action="store_true",
                   help="images are independent stills (crops): detect with a background from each image")
    s = p.add_argument_group("LymphoSim source")
    s.add_argument("--preset", default="default")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--flow-px", type=float, default=128.0, help="px per frame (default %(default)s)")
    s.add_argument("--cell-rate", type=float, default=SimConfig.cell_rate, help="cells entering per frame (default %(default)s)")
    s.add_argument("--p-pair", type=float, default=0.15)
    s.add_argument("--width", type=int, default=320)
    s.add_argument("--height", type=int, default=96)
    s.add_argument("--pool-frames", type=int, default=1500,
                   help="frames pre-rendered and replayed (0: render live, slow) (default %(default)s)")
    p.set_defaults(func=run_from_args)


#: Where `--backend onnx --model RUN` keeps the export of a trained run.
RUN_ONNX_CACHE = Path("export") / "onnx"


def onnx_model_folder(model: Path, say: Callable[[str], None]) -> Path:
    """The ONNX folder for `--model`: itself when it holds model.onnx; for a trained run
    folder, its export in RUN/export/onnx, made and checked as `export onnx` does when
    missing or made from other weights, else reused. `say` tells the user which."""
    from lymphosort.export.cli import export_onnx_run, reusable_onnx_export
    from lymphosort.train.checkpoint import WEIGHTS_FILE

    if (model / "model.onnx").is_file() or not (model / WEIGHTS_FILE).is_file():
        return model  # an export folder (or something the backend will explain it cannot load)
    cache = model / RUN_ONNX_CACHE
    record = reusable_onnx_export(model, cache)
    if record is not None:
        say(f"reusing the ONNX export {cache} (made from these weights; checked on {record['n_checked']} crops, "
            f"max |diff| {record['max_abs_diff']:.2e})")
        return cache
    say(f"exporting {model} to ONNX in {cache} (once; checked like `lymphosort export onnx`) ...")
    record = export_onnx_run(model, cache)
    say(f"  checked on {record['n_checked']} crops ({record['checked_on']}): max |diff| {record['max_abs_diff']:.2e}, "
        f"argmax agreement {record['argmax_agreement']:.4f}")
    return cache


def _still(args: argparse.Namespace) -> dict[str, Any]:
    from lymphosort.realtime.backends import load_backend
    from lymphosort.realtime.crop import crop_cells
    from lymphosort.realtime.detect import detect_still
    from lymphosort.realtime.sources import IMAGE_SUFFIXES, SourceError, load_grey

    src = Path(args.source)
    files = sorted(q for q in src.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES) if src.is_dir() else [src]
    if not files or not files[0].exists():
        raise SourceError(f"no images at {src}")
    backend = load_backend(args.backend, args.model, threads=args.threads)
    rows = []
    for f in files:
        img = load_grey(f)
        dets = detect_still(img)
        probs = backend.predict_proba(crop_cells(img, [(d.x, d.y) for d in dets])) if dets else []
        rows.append({"file": f.name, "detections": [
            {"x": d.x, "y": d.y, "box": list(d.box), "area": d.area, "doublet": d.doublet,
             "probs": [float(v) for v in pr]} for d, pr in zip(dets, probs)]})
    return {"mode": "still", "images": len(rows), "with_one_detection": sum(len(r["detections"]) == 1 for r in rows),
            "results": rows}


def run_from_args(args: argparse.Namespace) -> int:
    from lymphosort.errors import ConfigError
    from lymphosort.realtime.backends import load_backend
    from lymphosort.realtime.gate import Gate, JsonlSink, calibrate_threshold
    from lymphosort.realtime.report import LiveView
    from lymphosort.realtime.runner import RealtimeRunner, RunConfig, task_label_map
    from lymphosort.realtime.sources import SimConfig, SimSource, open_source
    from lymphosort.realtime.track import TrackerConfig

    given = args.model
    if args.backend == "onnx":
        args.model = onnx_model_folder(args.model, lambda msg: print(msg, file=sys.stderr))
    if args.still:
        rep = _still(args)
    else:
        backend = load_backend(args.backend, args.model, threads=args.threads)
        classes = list(backend.classes)
        if args.sort_class is None:
            target = len(classes) - 1
        elif args.sort_class in classes:
            target = classes.index(args.sort_class)
        else:
            raise ConfigError(f"--sort-class {args.sort_class!r} is not one of {classes}")
        label_map = task_label_map(backend.card)
        calib = None
        if args.target_purity is not None:
            threshold, calib = calibrate_threshold(backend, target, args.target_purity, label_map, preset=args.preset)
        else:
            threshold = 0.5 if args.threshold is None else args.threshold
        if args.source == "sim":
            sim = SimConfig(preset=args.preset, seed=args.seed, height=args.height, width=args.width,
                            fps=args.fps or SimConfig.fps, flow_px_per_frame=args.flow_px, cell_rate=args.cell_rate,
                            p_pair=args.p_pair, pool_frames=args.pool_frames)
            if not args.quiet:
                print(f"rendering {sim.pool_frames} LymphoSim frames ...", file=sys.stderr)
            source = SimSource(sim)
        else:
            source = open_source(args.source, fps=args.fps)
        cfg = RunConfig(duration_s=args.duration, max_frames=args.max_frames, realtime=not args.as_fast_as_possible,
                        queue_size=args.queue_size, drop=args.drop, deadline_us=args.deadline_us,
                        tracker=TrackerConfig(trigger_x=args.trigger_x))
        sink = JsonlSink(args.events) if args.events else None
        runner = RealtimeRunner(source, backend, Gate(target, threshold), sink, cfg, label_map)
        live = not args.quiet and sys.stdout.isatty()
        if live:
            with LiveView(runner.snapshot):
                rep = runner.run()
        else:
            rep = runner.run()
        rep.update({"model": str(given), "model_folder": str(args.model), "source": str(args.source), "threshold_from":
                    f"target purity {args.target_purity} on calibration crops" if calib else "given"})
        if calib is not None:
            rep["calibration_curve"] = calib[::5]
        if isinstance(source, SimSource):
            rep["sim"] = {**vars(source.config), "render_s": source.render_s,
                          "render_frames_per_s": source.config.pool_frames / source.render_s if source.render_s else None}
    text = json.dumps(rep, indent=2, default=str)
    if args.report:
        from lymphosort.atomic import write_text_atomic

        write_text_atomic(args.report, text + "\n")
    keys = ("frames", "dropped_frames", "decisions", "cells_per_s", "p50_latency_us", "p99_latency_us",
            "max_latency_us", "detection_precision", "detection_recall", "accuracy", "purity", "yield")
    if args.still:
        print(f"{rep['with_one_detection']}/{rep['images']} images with exactly one detection")
    else:
        print("  ".join(f"{k}={_fmt(rep.get(k))}" for k in keys))
    return 0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)

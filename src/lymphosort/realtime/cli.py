"""`lymphosort realtime`: flags generated from RealtimeConfig; runs the sorting path on a
source and writes a JSON report."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lymphosort.config import add_config_flags, resolve_config

__all__ = ["register", "run_from_args"]

#: the flag names the command had before its flags were generated
_ALIASES = {"sim.preset": ["--preset"], "sim.seed": ["--seed"], "sim.flow_px_per_frame": ["--flow-px"],
            "sim.cell_rate": ["--cell-rate"], "sim.p_pair": ["--p-pair"], "sim.width": ["--width"],
            "sim.height": ["--height"], "sim.pool_frames": ["--pool-frames"]}


def register(subparsers: argparse._SubParsersAction) -> None:
    from lymphosort.realtime.session import RealtimeConfig

    p = subparsers.add_parser(
        "realtime", help="detect, track, classify and gate cells in a frame stream (CPU sorting path)",
        description="Real-time sorting path on the CPU. Latency = frame arrival to decision per cell. "
        "--no-paced (alias --as-fast-as-possible) runs the source unpaced, for throughput runs.")
    p.add_argument("--quiet", action="store_true", help="no live view (also off when stdout is not a TTY)")
    p.add_argument("--as-fast-as-possible", dest="cfg:paced", action="store_false", default=argparse.SUPPRESS,
                   help="do not pace the source at its frame rate (same as --no-paced)")
    add_config_flags(p, RealtimeConfig, aliases=_ALIASES, skip=("sim.fps", "sim.max_frames", "sim.session"))
    p.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    from lymphosort.realtime.session import RealtimeConfig, run_realtime

    cfg = resolve_config(RealtimeConfig, args)
    rep = run_realtime(cfg, say=lambda msg: print(msg, file=sys.stderr),
                       live=not args.quiet and sys.stdout.isatty())
    keys = ("frames", "dropped_frames", "decisions", "cells_per_s", "p50_latency_us", "p99_latency_us",
            "max_latency_us", "detection_precision", "detection_recall", "accuracy", "purity", "yield")
    if cfg.still:
        print(f"{rep['with_one_detection']}/{rep['images']} images with exactly one detection")
    else:
        print("  ".join(f"{k}={_fmt(rep.get(k))}" for k in keys))
    return 0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)

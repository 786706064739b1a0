"""``lymphosort evaluate RUN --task ...``: parses the flags and calls `evaluate_run`
(evaluate/run.py), then prints its summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lymphosort.data.info import TASKS
from lymphosort.evaluate.run import DEFAULT_DATA_ROOT, evaluate_run, resolve_data_root

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="metrics with 95%% intervals, cost and plots for a run folder")
    p.add_argument("run", type=Path, help="run folder holding model.safetensors + model.json")
    p.add_argument("--task", required=True, choices=tuple(TASKS))
    p.add_argument("--data-root", type=Path, default=None,
                   help="data root; files live in ROOT/LymphoMNIST/raw (default: the root the run was trained "
                   f"on, as its model.json records; {DEFAULT_DATA_ROOT} when it records none)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/eval/TASK-SPLIT)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="inference device (latency is always measured on CPU)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the latency measurement")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    from lymphosort.config import add_config_file

    add_config_file(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    root, origin = resolve_data_root(args.run, args.data_root)
    if args.data_root is None:
        print(f"data root: {root} ({origin})")
    r = evaluate_run(
        args.run, args.task, root, args.split, args.out,
        batch_size=args.batch_size, device=args.device, n_boot=args.n_boot,
        latency=not args.no_latency, threads=args.threads,
    )

    def ci(k: str) -> str:
        iv = (r.get("intervals") or {}).get(k)
        return f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""

    auc = f"{r['roc_auc']:.4f}" if r["roc_auc"] is not None else "n/a"
    print(f"{r['model']} on {r['task']} {r['split']} (n={r['n']}, {r['data'].get('source', '?')} data)")
    print(f"  accuracy {r['accuracy']:.4f}{ci('accuracy')}  balanced {r['balanced_accuracy']:.4f}{ci('balanced_accuracy')}")
    print(f"  f1 {r['f1']:.4f}{ci('f1')}  roc_auc {auc}{ci('roc_auc')}  ece {r['ece']:.4f}")
    lat = r.get("cpu_latency_ms")
    lat_s = f", CPU latency {lat['1']:.2f} ms @1, {lat['256']:.1f} ms @256" if lat else ""
    print(f"  {r['params']:,} params, {r['macs']:,} MACs{lat_s}")
    print(f"  wrote {r['out']}")
    return 0

"""``lymphosort audit RUN --data-root DIR``: does the run read the cell or the background?

Argument parsing only; the work is `lymphosort.evaluate.audit.audit_run` (imported lazily so
`lymphosort --help` stays fast).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lymphosort.data.info import DEFAULT_ROOT, TASKS

__all__ = ["register"]

DEFAULT_N = 2000  # mirrors audit.DEFAULT_N_MAX without importing scipy/sklearn at --help time


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit",
        help="confound audit: accuracy with the background blanked, and the background alone as a classifier",
        description="Measure how much of a run's accuracy survives when only the cell is shown (the "
        "background ring replaced by one constant) and how well the background ring alone predicts the "
        "class (cross-validated classifier). Writes audit.json, audit.md and audit.png.",
    )
    p.add_argument("run", type=Path, help="run folder holding model.safetensors + model.json")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-root", type=Path, default=None,
                     help="IDX data root; files live in ROOT/LymphoMNIST/raw (default: the one the run was "
                     f"trained on, as its model.json records; else {DEFAULT_ROOT})")
    src.add_argument("--data-folder", type=Path, default=None,
                     help="lab folder of class subfolders (the run's class names, or B/T4/T8) instead of an IDX root")
    p.add_argument("--task", default=None, choices=tuple(TASKS), help="task view (default: the run's own)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split of an IDX root")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/audit/TASK-SPLIT)")
    p.add_argument("--n", type=int, default=DEFAULT_N, help="audit at most N crops, stratified (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="subsample, cross-validation and bootstrap seed")
    from lymphosort.config import add_config_file

    add_config_file(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from lymphosort.evaluate.audit import NOT_FLAGGED, audit_run
    from lymphosort.evaluate.run import resolve_data_root

    r = audit_run(
        args.run, None if args.data_folder is not None else resolve_data_root(args.run, args.data_root)[0],
        task=args.task, split=args.split, out=args.out, n_max=args.n, seed=args.seed, data_folder=args.data_folder,
    )
    a, ring = r["accuracy"], r["ring_only"]
    print(f"FLAGGED: {'; '.join(r['reasons'])}" if r["flagged"] else f"not flagged: {NOT_FLAGGED}")
    print(f"{r['model']} on {r['task']} {r['data']['split']} (n={r['n']}, {r['data'].get('source', '?')} data)")
    print(f"  accuracy {a['as_is']['accuracy']:.4f}, ring blanked {a['blanked']['accuracy']:.4f} "
          f"(drop {a['drop_points']:.1f} points)")
    print(f"  ring-only balanced accuracy {ring['balanced_accuracy']:.4f} "
          f"[{ring['intervals']['balanced_accuracy'][0]:.3f}, {ring['intervals']['balanced_accuracy'][1]:.3f}], "
          f"chance {ring['chance_balanced_accuracy']:.3f}")
    print(f"  masks: {r['mask']['fallback_count']} of {r['n']} fell back to a centred disc; wrote {r['out']}")
    return 0

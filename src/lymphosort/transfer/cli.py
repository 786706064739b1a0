"""`lymphosort transfer zero-shot | finetune | few-shot`: adapt a trained run to another task."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from lymphosort.data.info import DEFAULT_ROOT, TASKS

__all__ = ["register"]

log = logging.getLogger(__name__)

DEFAULT_DATA_ROOT = DEFAULT_ROOT


def _data(args: argparse.Namespace) -> Any:
    from lymphosort.transfer.shots import folder_data, lymphomnist_data

    if args.data_folder is not None:
        classes = args.classes.split(",") if args.classes else None
        return folder_data(args.data_folder, classes=classes, split_seed=args.split_seed)
    from lymphosort.evaluate.run import resolve_data_root

    root, source = resolve_data_root(args.run, args.data_root)  # the run's own data unless told
    log.info("data root %s (%s)", root, source)
    return lymphomnist_data(root, args.task)


def _base_cfg(args: argparse.Namespace) -> Any:
    """FinetuneConfig defaults < --config FILE < flags (mode, shots and seed come per run)."""
    from lymphosort.config import resolve_config
    from lymphosort.transfer.finetune import FinetuneConfig

    return resolve_config(FinetuneConfig, args)


def _fmt(m: dict[str, Any], key: str) -> str:
    v = m.get(key)
    iv = (m.get("intervals") or {}).get(key)
    if v is None:
        return f"{key} n/a"
    return f"{key} {v:.4f}" + (f" [{iv[0]:.4f}, {iv[1]:.4f}]" if iv else "")


def _zero_shot(args: argparse.Namespace) -> int:
    from lymphosort.config import resolve_config
    from lymphosort.transfer.zeroshot import ZeroShotConfig, zero_shot

    r = zero_shot(args.run, resolve_config(ZeroShotConfig, args), args.out)
    z = r["zero_shot"]
    print(f"{r['model']} ({z['source_task']}) zero-shot on {r['task']} test (n={r['n']})")
    print(f"  {_fmt(r, 'accuracy')}  {_fmt(r, 'balanced_accuracy')}  {_fmt(r, 'roc_auc')}")
    op = z.get("operating_point")
    if op:
        t = op["test"]
        print(f"  threshold chosen on val: {op['threshold']:.4f} -> test {_fmt(t, 'balanced_accuracy')}  {_fmt(t, 'accuracy')}")
    c = z["calibration"]
    print(
        f"  temperature {c['temperature']:.3f} (val NLL): test ECE {c['test_ece']['before']:.4f} -> "
        f"{c['test_ece']['after']:.4f}, NLL {c['test_nll']['before']:.4f} -> {c['test_nll']['after']:.4f}"
    )
    print(f"  wrote {r['out']}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    import dataclasses

    from lymphosort.errors import ConfigError
    from lymphosort.transfer.finetune import finetune, redistill
    from lymphosort.transfer.shots import parse_shots

    from lymphosort.threads import configure_threads

    configure_threads(args.threads)
    data = _data(args)
    seeds = args.seeds or [0]
    base = _base_cfg(args)
    shots = parse_shots(args.shots)
    for seed in seeds:
        out = Path(args.out) if len(seeds) == 1 else Path(args.out) / f"seed{seed}"
        cfg = dataclasses.replace(base, mode=args.mode, shots=shots, seed=seed)
        if args.resume and (out / "transfer.json").is_file():
            print(f"seed {seed}: {out} is finished; reusing it")
        elif args.resume and out.exists():
            print(f"seed {seed}: resuming the interrupted run in {out}")
        if args.distill_into:
            if args.mode == "linear":
                raise ConfigError("--distill-into fine-tunes the teacher first; use --mode partial or full")
            t = finetune(args.run, data, cfg, out / "teacher", quiet=args.quiet, resume=args.resume)
            s = redistill(out / "teacher", args.distill_into, data, cfg, out, quiet=args.quiet, resume=args.resume)
            print(f"seed {seed}: teacher {_fmt(t['test'], 'accuracy')}; re-distilled student {_fmt(s['test'], 'accuracy')}  -> {out}")
        else:
            r = finetune(args.run, data, cfg, out, quiet=args.quiet, full_report=not args.no_report, resume=args.resume)
            print(f"seed {seed}: {args.mode} K={r['shots']} on {r['task']}: {_fmt(r['test'], 'accuracy')}  "
                  f"{_fmt(r['test'], 'roc_auc')}  -> {out}")
    return 0


def _few_shot(args: argparse.Namespace) -> int:
    from lymphosort.threads import configure_threads
    from lymphosort.transfer.fewshot import few_shot
    from lymphosort.transfer.shots import parse_shots

    configure_threads(args.threads)
    curve = few_shot(
        args.run, _data(args), args.out,
        shots=[parse_shots(s) for s in args.shots], modes=args.modes, seeds=args.seeds,
        base=_base_cfg(args), quiet=args.quiet,
    )
    from lymphosort.transfer.fewshot import table_markdown

    print(table_markdown(curve))
    print(f"wrote {Path(args.out) / 'curve.json'}, curve.png, table.md")
    return 0


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None,
                   help=f"LymphoMNIST root (default: the one the run was trained on, from its model card; "
                   f"else {DEFAULT_DATA_ROOT})")
    p.add_argument("--data-folder", type=Path, default=None,
                   help="lab folder of class subfolders (or path,label CSV): new cell types; split here into "
                   "shot pool / 20%% val / 30%% test per class, deterministically")
    p.add_argument("--classes", default=None, help="comma-separated class order for --data-folder")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the --data-folder split")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from lymphosort.config import add_config_flags
    from lymphosort.transfer.finetune import FinetuneConfig

    p.add_argument("--quiet", action="store_true", help="less Lightning output")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice capped by the CPUs this process may use: "
                   "affinity mask and cgroup quota)")
    add_config_flags(p, FinetuneConfig, aliases={"ema_decay": ["--ema"]}, skip=("mode", "shots", "seed"))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("transfer", help="zero-shot transfer, fine-tuning and few-shot curves")
    sub = p.add_subparsers(dest="transfer_command", metavar="ACTION", required=True)

    z = sub.add_parser("zero-shot", help="evaluate a run on another task without training (+ threshold, calibration)")
    z.add_argument("run", type=Path, help="run folder (teacher or student)")
    z.add_argument("--out", type=Path, default=None, help="default: RUN/zero-shot/TASK")
    from lymphosort.config import add_config_flags
    from lymphosort.transfer.zeroshot import ZeroShotConfig

    add_config_flags(z, ZeroShotConfig)
    z.set_defaults(func=_zero_shot)

    f = sub.add_parser("finetune", help="fine-tune a run on K labelled cells per class")
    f.add_argument("run", type=Path)
    f.add_argument("--task", default="t8-vs-b", choices=tuple(TASKS), help="ignored with --data-folder")
    f.add_argument("--mode", choices=("linear", "partial", "full"), default="linear")
    f.add_argument("--shots", default="25", help="cells per class, or 'all'")
    f.add_argument("--seeds", type=int, nargs="+", default=None, help="one run per seed (OUT/seedS when several)")
    f.add_argument("--out", required=True, type=Path)
    f.add_argument("--distill-into", type=Path, default=None, metavar="STUDENT_RUN",
                   help="fine-tune RUN (a teacher) into OUT/teacher, then re-distil into this student on the same shots")
    f.add_argument("--no-report", action="store_true", help="skip the evaluate report (plots) in OUT/eval")
    f.add_argument("--resume", action="store_true",
                   help="continue an interrupted OUT (same command otherwise) from its last finished epoch; "
                   "a finished OUT is read back")
    _add_data_args(f)
    _add_train_args(f)
    f.set_defaults(func=_finetune)

    g = sub.add_parser("few-shot", help="the K x mode x seed grid: curve (PNG, JSON) and a markdown table")
    g.add_argument("run", type=Path)
    g.add_argument("--task", default="t8-vs-b", choices=tuple(TASKS))
    g.add_argument("--shots", nargs="+", default=["5", "10", "25", "100", "all"])
    g.add_argument("--modes", nargs="+", choices=("linear", "partial", "full"), default=["linear", "partial", "full"])
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    g.add_argument("--out", required=True, type=Path)
    _add_data_args(g)
    _add_train_args(g)
    g.set_defaults(func=_few_shot)

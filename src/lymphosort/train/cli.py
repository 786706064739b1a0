"""`lymphosort train`: fit a registered model; the run folder holds everything it made."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from lymphosort.train.config import DEFAULT_DATA_ROOT, DEFAULT_TEACHER, TrainConfig

#: argparse dest -> TrainConfig field, for flags shared by `train` and `distill`.
_FLAG_FIELDS: dict[str, str] = {
    "task": "task",
    "data_root": "data_root",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "warmup_frac": "warmup_frac",
    "patience": "patience",
    "monitor": "monitor",
    "seed": "seed",
    "max_train_samples": "max_train_samples",
    "max_val_samples": "max_val_samples",
    "num_workers": "num_workers",
    "accelerator": "accelerator",
    "devices": "devices",
    "strategy": "strategy",
    "precision": "precision",
    "init_from": "init_from",
    "ema": "ema_decay",
}


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by `train` and `distill` (defaults None: unset flags keep the config's value)."""
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write (or to resume)")
    p.add_argument("--task", default=None, help="task view (default t4-vs-b)")
    p.add_argument(
        "--data-root", default=None, metavar="DIR", help=f"LymphoMNIST root (default {DEFAULT_DATA_ROOT})"
    )
    p.add_argument("--config", default=None, metavar="FILE", help="YAML/JSON TrainConfig; flags override it")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--warmup-frac", type=float, default=None, help="fraction of steps in linear warm-up")
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (0: off)")
    p.add_argument("--monitor", choices=("val_bacc", "val_acc", "val_loss"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-train-samples", type=int, default=None, metavar="N", help="random subset, for quick runs")
    p.add_argument("--max-val-samples", type=int, default=None, metavar="N")
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--accelerator", default=None, help="Lightning accelerator (default auto)")
    p.add_argument("--devices", default=None, help="Lightning devices (default auto; torchrun sets it)")
    p.add_argument("--strategy", default=None, help="Lightning strategy (default auto; ddp under torchrun)")
    p.add_argument("--precision", default=None, help="e.g. 32-true, bf16-mixed, 16-mixed")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="validate, early-stop and save an exponential moving average of the weights "
                   "(e.g. 0.999; default off)")
    p.add_argument("--no-augment", action="store_true", help="train without batch augmentation")
    p.add_argument("--no-balanced", action="store_true", help="plain shuffling instead of class-balanced sampling")
    p.add_argument("--init-from", default=None, metavar="RUN",
                   help="start from the weights of a trained run of the same model (or, for a QAT model, "
                   "of its float student: quantisation-aware fine-tuning)")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN/last.ckpt (written after every epoch) with RUN/config.yaml, at the "
                   "first unfinished epoch")
    p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no Lightning banners")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice capped by the CPUs this process may use: "
                   "affinity mask and cgroup quota; logged in train.log)")


def resolve_config(args: argparse.Namespace, **fields: Any) -> TrainConfig:
    """Config precedence: RUN/config.yaml (on --resume) or --config, then given flags, then `fields`."""
    from lymphosort.train.config import load_config

    saved = Path(args.out) / "config.yaml"
    if args.resume and saved.is_file():
        cfg = load_config(saved)
    elif args.config:
        cfg = load_config(args.config)
    else:
        cfg = TrainConfig()
    changes = {f: getattr(args, dest, None) for dest, f in _FLAG_FIELDS.items()}
    if isinstance(changes.get("devices"), str) and changes["devices"].isdigit():
        changes["devices"] = int(changes["devices"])
    changes.update(fields)
    cfg = cfg.replace(**changes)
    if args.no_augment:
        cfg = dataclasses.replace(cfg, augment=None)  # replace() skips None values
    if args.no_balanced:
        cfg = cfg.replace(balanced=False)
    return cfg.validate()


def report(result: Any) -> None:
    """A few lines for the terminal: where the run went and how it did."""
    print(f"run folder: {result.run_dir}")
    if result.best_val:
        shown = {k: round(v, 4) for k, v in result.best_val.items() if k in ("epoch", "val_loss", "val_acc", "val_bacc")}
        print(f"best validation: {json.dumps(shown)}")
    if result.test_metrics:
        keys = ("accuracy", "balanced_accuracy", "f1", "roc_auc")
        shown = {k: round(float(result.test_metrics[k]), 4) for k in keys if isinstance(result.test_metrics.get(k), (int, float))}
        print(f"test: {json.dumps(shown)}")


def run_train(args: argparse.Namespace) -> int:
    from lymphosort.threads import configure_threads
    from lymphosort.train.fit import fit, is_rank_zero

    configure_threads(args.threads)
    cfg = resolve_config(args, model=args.model)
    result = fit(cfg, args.out, resume=args.resume, quiet=args.quiet, evaluate=not args.no_eval)
    if is_rank_zero():
        report(result)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a registered model (default: the compact teacher)",
        description="Train a model on LymphoMNIST (or LymphoSim) with Lightning. The run folder gets "
        "model.safetensors + model.json, last.ckpt (for --resume), config.yaml, history.json, "
        "metrics.csv, curves.png, train.log and metrics.json (test split). Runs data-parallel "
        "under `torchrun --nproc_per_node=N -m lymphosort.cli train ...`.",
    )
    p.add_argument("--model", default=None, help=f"registered model name (default {DEFAULT_TEACHER})")
    add_common_args(p)
    p.set_defaults(func=run_train)

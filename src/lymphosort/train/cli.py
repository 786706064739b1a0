"""`lymphosort train` and `lymphosort distill`: flags generated from TrainConfig /
DistillConfig (`lymphosort.config`); the run folder holds everything a run made."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from lymphosort.config import add_config_flags, given_fields, load_mapping, resolve_config
from lymphosort.train.config import DistillConfig, TrainConfig, config_class

#: TrainConfig fields that only a distillation uses (no flags on `train`)
_DISTILL_FIELDS = ("teacher", "method", "method_kwargs", "student_layers", "teacher_layers", "teacher_precision")
#: older or shorter spellings kept for the fields
_ALIASES = {"ema_decay": ["--ema"], "method_kwargs": ["--method-arg"]}


def _run_flags(p: argparse.ArgumentParser) -> None:
    """Options of the invocation, not of the experiment (not in config.yaml)."""
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write (or to resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN/last.ckpt (written after every epoch) with RUN/config.yaml, at the "
                   "first unfinished epoch; flags given change the saved config")
    p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no Lightning banners")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice capped by the CPUs this process may use: "
                   "affinity mask and cgroup quota; logged in train.log)")


def _saved(args: argparse.Namespace) -> dict[str, Any] | None:
    saved = Path(args.out) / "config.yaml"
    return load_mapping(saved) if args.resume and saved.is_file() else None


def train_config(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig defaults < --config FILE (or RUN/config.yaml on --resume) < flags."""
    base = _saved(args)
    cls = config_class(base) if base is not None else TrainConfig
    return resolve_config(cls, args, base=base)


def distill_config(args: argparse.Namespace) -> DistillConfig:
    """DistillConfig defaults (the shipped recipe) < the teacher's task and data root < --config
    FILE (or RUN/config.yaml on --resume) < flags; `--qat BITS` then names the student's twin."""
    base = _saved(args)
    given = given_fields(args)
    defaults: dict[str, Any] = {}
    if base is None:
        from_file = load_mapping(args.config) if args.config else {}
        teacher = given.get("teacher", from_file.get("teacher"))
        if teacher:
            defaults = DistillConfig.teacher_defaults(teacher)
        if "method_kwargs" not in from_file:  # flags' KEY=VALUE go on top of the method's shipped ones
            method = given.get("method", from_file.get("method", DistillConfig.method))
            defaults["method_kwargs"] = DistillConfig(method=method).method_kwargs
    cfg = resolve_config(DistillConfig, args, defaults=defaults, base=base)
    if args.qat is not None and (base is None or "model" in given):
        from lymphosort.models.quant import qat_twin

        name, kwargs = qat_twin(cfg.model, args.qat)
        cfg = dataclasses.replace(cfg, model=name, model_kwargs={**cfg.model_kwargs, **kwargs})
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


def _run(args: argparse.Namespace, cfg: TrainConfig) -> int:
    from lymphosort.threads import configure_threads
    from lymphosort.train.fit import fit, is_rank_zero

    configure_threads(args.threads)
    result = fit(cfg, args.out, resume=args.resume, quiet=args.quiet, evaluate=not args.no_eval)
    if is_rank_zero():
        report(result)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a registered model (default: the compact teacher)",
        description="Train a model on LymphoMNIST (or LymphoSim) with Lightning. The run folder gets "
        "model.safetensors + model.json, last.ckpt (for --resume), config.yaml (the resolved TrainConfig), "
        "history.json, metrics.csv, curves.png, train.log and metrics.json (test split). Runs data-parallel "
        "under `torchrun --nproc_per_node=N -m lymphosort.cli train ...`.",
    )
    _run_flags(p)
    add_config_flags(p, TrainConfig, aliases=_ALIASES, skip=_DISTILL_FIELDS)
    p.set_defaults(func=lambda a: _run(a, train_config(a)))

    d = DistillConfig()
    p = subparsers.add_parser(
        "distill",
        help="distil a trained teacher into a small student",
        description="Train a student (--model, alias --student) against the frozen teacher in --teacher RUN. "
        "Teacher and student see the same augmented images, each resized and normalised for its own input. "
        "Methods: kd (Hinton), dkd (decoupled KD), at (attention transfer + KD), none (labels only), paper "
        f"(the reference recipe: mixup soft labels, teacher unused). The defaults are the shipped recipe: "
        f"{d.model}, {d.method} ({', '.join(f'{k} {v:g}' for k, v in d.method_kwargs.items())}), {d.epochs} epochs, "
        f"patience {d.patience} (the best validation checkpoint kept); task and data root follow the teacher.",
    )
    _run_flags(p)
    p.add_argument("--qat", type=int, default=None, metavar="BITS",
                   help="quantisation-aware training: the student's Brevitas fixed-point twin with BITS-bit "
                   "weights and activations (e.g. 8 or 4), for `lymphosort export hls`")
    add_config_flags(p, DistillConfig, aliases={**_ALIASES, "model": ["--student"]})
    p.set_defaults(func=lambda a: _run(a, distill_config(a)))

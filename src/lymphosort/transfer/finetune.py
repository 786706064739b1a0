"""Fine-tuning a trained run on a new task from K labelled cells per class.

Data (`TransferData`): shots are drawn from a pool that never meets validation or test.
For LymphoMNIST the pool is the train split (official train file) and validation is the
val split (a part of the official test file): different files, so shots and validation
cannot overlap. A lab folder is split once, deterministically and stratified, into
pool / val / test (`folder_data`); shots come from the pool only.

Modes: `linear` trains the head on features computed once (frozen extractor, no image
passes per step); `partial` trains the last stage and the head; `full` trains
everything at a lower learning rate. `partial`/`full` go through `train.fit` (the one
training loop) with the network initialised from the run's checkpoint; BatchNorm layers
in the frozen part stay in eval mode so a handful of shots cannot shift their statistics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lymphosort.data.lymphomnist import SplitData
from lymphosort.errors import ConfigError

from lymphosort.transfer.heads import FeatureCache, fit_head, prepare_model
from lymphosort.transfer.shots import TransferData, cap, draw_shots, shots_name, subset

__all__ = ["DEFAULT_LR", "FinetuneConfig", "finetune", "redistill"]

log = logging.getLogger(__name__)

#: Default learning rates: the head alone tolerates a large step, the whole network does not.
DEFAULT_LR = {"linear": 1e-2, "partial": 1e-3, "full": 3e-4}


@dataclass
class FinetuneConfig:
    """One fine-tuning run: mode, shots per class (None = all), seed and training knobs (the
    config of `lymphosort transfer finetune`; few-shot runs a grid of them)."""

    #: linear (the head on frozen features), partial (the last block and the head) or full
    mode: str = "linear"
    #: labelled cells per class (none: all)
    shots: int | None = 25
    seed: int = 0
    #: none: linear 1e-2, partial 1e-3, full 3e-4
    lr: float | None = None
    #: partial/full: none = 15 short epochs for K <= 100, 4 epochs of the whole pool for "all".
    epochs: int | None = None
    batch_size: int = 64
    #: early-stopping patience on validation balanced accuracy (epochs for partial/full,
    #: checks of 10 steps for linear); none: 4 for K <= 100, else 2
    patience: int | None = None
    weight_decay: float = 0.01
    #: one epoch of partial/full repeats the shots to at least this many (augmented) images.
    min_epoch_samples: int = 512
    #: stratified cap on the validation set (early stopping and operating point), none (or 0) = all.
    max_val_samples: int | None = 2000
    #: `AugmentConfig` keywords; None = the source run's own augmentation.
    augment: dict[str, Any] | None = None
    #: start from a fresh head even when the classes match
    reset_head: bool = False
    #: partial/full: decay of an exponential moving average of the weights (None = off);
    #: see `TrainConfig.ema_decay`.
    ema_decay: float | None = None
    #: linear mode: most full-batch head steps.
    head_steps: int = 500
    #: bootstrap resamples for the 95% intervals
    n_boot: int = 1000

    def __post_init__(self) -> None:
        if self.max_val_samples == 0:
            self.max_val_samples = None

    def resolved_lr(self) -> float:
        return float(self.lr if self.lr is not None else DEFAULT_LR[self.mode])

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "lr": self.resolved_lr(), "shots": shots_name(self.shots)}


def _test_metrics(model: nn.Module, test: SplitData, n_boot: int, feats: torch.Tensor | None = None) -> dict[str, Any]:
    from lymphosort.evaluate.run import predict_proba
    from lymphosort.evaluate.metrics import classification_metrics

    if feats is not None:  # linear path: the cached features give the very same logits
        with torch.inference_mode():
            probs = torch.softmax(model.forward_head(feats).double(), dim=1).numpy()
    else:
        probs = predict_proba(model, test.images)
    m = classification_metrics(test.labels.numpy(), probs, n_boot=n_boot, class_names=list(test.classes))
    return {**m, "split": test.split, "split_id": test.split_id}


def _tile(data: SplitData, n_min: int) -> SplitData:
    reps = max(1, math.ceil(n_min / max(1, len(data))))
    return data if reps == 1 else subset(data, np.tile(np.arange(len(data)), reps))


def _placeholder_task(n_classes: int) -> str:
    # train.fit validates its task against data.info.TASKS; lab-folder classes reuse a task
    # with the same class count, and the card written afterwards names the real classes.
    if n_classes == 2:
        return "t-vs-b"
    if n_classes == 3:
        return "3-class"
    raise ConfigError(
        f"partial/full fine-tuning supports 2 or 3 classes (train.fit's task views); this folder has {n_classes}: "
        "use --mode linear"
    )


#: Written first into a fine-tuning folder (what it is being trained with), and last (the summary).
START_FILE, SUMMARY_FILE = "transfer_start.json", "transfer.json"


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys, so a message can name the setting that changed."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _model_and_shots(
    run_dir: str | os.PathLike[str], data: TransferData, cfg: FinetuneConfig, mode: str
) -> tuple[nn.Module, Any, dict[str, Any], np.ndarray, SplitData, SplitData]:
    """`prepare_model` of `run_dir`, then the seeded shots of the pool and the (capped) val split.

    Returns (model, source card, head info, shot positions in the pool, shots, val). The new
    head's initial weights come from `cfg.seed`, not from whatever ran before.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model, card, head_info = prepare_model(run_dir, data.classes, mode, cfg.reset_head)
    shot_pos = draw_shots(data.pool.labels.numpy(), cfg.shots, cfg.seed, len(data.classes))
    shots = subset(data.pool, shot_pos, split="shots")
    return model, card, head_info, shot_pos, shots, cap(data.val, cfg.max_val_samples)


def _begin(out_dir: Path, resume: bool, record: dict[str, Any]) -> dict[str, Any] | None:
    """Check `out_dir` against `resume`; return the finished summary to reuse, or None to train.

    A folder with `SUMMARY_FILE` is finished; one with `START_FILE` only was interrupted and
    continues (with `resume`) only under the very configuration it started with.
    """
    from lymphosort.atomic import write_json_atomic
    from lymphosort.models.checkpoint import jsonable

    summary, start = out_dir / SUMMARY_FILE, out_dir / START_FILE
    if summary.is_file():
        if not resume:
            raise ConfigError(f"{out_dir} already holds a finished fine-tuning run; choose another --out")
        log.info("reusing the finished run in %s", out_dir)
        return json.loads(summary.read_text(encoding="utf-8"))
    record = jsonable(record)
    if start.is_file() or (out_dir / "model.safetensors").exists():
        if not resume:
            raise ConfigError(f"{out_dir} holds an interrupted fine-tuning run; pass --resume to continue it "
                              "or choose another --out")
        # A folder from before START_FILE existed cannot be checked; it resumes as it is.
        saved = _flat(json.loads(start.read_text(encoding="utf-8")) if start.is_file() else record)
        now = _flat(record)
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if changed:
            raise ConfigError(f"{out_dir} was started with other settings ({', '.join(changed)} differ); "
                              "resume with the command that started it")
        log.info("resuming the interrupted run in %s", out_dir)
    write_json_atomic(start, record, allow_nan=False)
    return None


def finetune(  # one run from start record to summary; its three modes share every step but the fit
    run_dir: str | os.PathLike[str],
    data: TransferData,
    cfg: FinetuneConfig,
    out: str | os.PathLike[str],
    *,
    cache: FeatureCache | None = None,
    quiet: bool = True,
    full_report: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Fine-tune `run_dir` on `data` and write a run folder `out` (model.safetensors,
    model.json, transfer.json, metrics.json). Returns the summary written to transfer.json.

    `cache` (linear mode): reuse features across calls with the same source run. With
    `full_report` and LymphoMNIST data, `evaluate_run` also writes `OUT/eval/TASK-test`.
    With `resume`, an interrupted `out` continues: partial/full from its last.ckpt (the first
    unfinished epoch, ending with an uninterrupted run's weights; see `train.fit`); linear
    mode refits its head (seconds, deterministic, so again the same weights). A finished
    `out` is read back instead of trained again.
    """
    from lymphosort.atomic import write_json_atomic
    from lymphosort.models.checkpoint import jsonable, read_card, save_checkpoint

    out_dir = Path(out)
    started = {"source_run": str(run_dir), "task": data.task, "classes": list(data.classes),
               "data": data.source, "data_root": data.data_root, "pool_split_id": data.pool.split_id,
               "config": cfg.to_dict()}
    done = _begin(out_dir, resume, started)
    if done is not None:
        return done
    resuming = (out_dir / "last.ckpt").is_file()
    model, src_card, head_info, shot_pos, shots, val = _model_and_shots(run_dir, data, cfg, cfg.mode)
    transfer: dict[str, Any] = {
        "source_run": str(run_dir),
        "source_model": src_card.model,
        "source_task": src_card.task,
        "task": data.task,
        "classes": list(data.classes),
        "mode": cfg.mode,
        "shots": shots_name(cfg.shots),
        "seed": cfg.seed,
        "n_train": len(shots),
        "shot_rows": shots.indices.tolist(),
        "shot_rows_of": "train file rows" if data.source == "lymphomnist" else "folder image positions",
        "validation": data.validation,
        "n_val": len(val),
        "val_rows": val.indices.tolist(),
        "head": head_info,
        "config": cfg.to_dict(),
    }
    provenance = {**dict(data.pool.provenance), "transfer": {k_: v for k_, v in transfer.items() if not k_.endswith("_rows")}}
    if data.source == "lymphomnist" and data.data_root:
        from lymphosort.models.checkpoint import DATA_ROOT_KEY

        provenance[DATA_ROOT_KEY] = str(data.data_root)

    if cfg.mode == "linear":
        # A cache built from the same run holds the same frozen extractor's features.
        cache = cache or FeatureCache(model)
        history = fit_head(
            model.head,
            cache.get(data.pool, shot_pos),
            shots.labels,
            cache.get(val),
            val.labels,
            lr=cfg.resolved_lr(),
            weight_decay=cfg.weight_decay,
            max_steps=cfg.head_steps,
            patience=cfg.patience if cfg.patience is not None else 5,
            seed=cfg.seed,
        )
        model.eval()
        metrics = _test_metrics(model, data.test, cfg.n_boot, feats=cache.get(data.test))
        from lymphosort.models.checkpoint import ModelCard

        card = ModelCard.from_model(
            model, task=data.task, classes=list(data.classes), data=provenance, split_id=data.pool.split_id,
            config={"transfer": cfg.to_dict(), "source_config": src_card.config},
            metrics={"val": history and max(history, key=lambda h: (h["val_bacc"], -h["val_loss"])), "test": metrics},
        )
        save_checkpoint(out_dir, model, card)
        write_json_atomic(out_dir / "history.json", history, indent=None)
    else:
        from lymphosort.train.config import TrainConfig
        from lymphosort.train.fit import fit

        small = cfg.shots is not None and cfg.shots <= 100
        tcfg = TrainConfig(
            model=src_card.model,
            model_kwargs=dict(src_card.create_kwargs),
            task=data.task if data.source == "lymphomnist" else _placeholder_task(len(data.classes)),
            data_root=data.data_root or "",
            epochs=cfg.epochs or (15 if small else 4),
            batch_size=min(cfg.batch_size, max(2, len(shots))),
            lr=cfg.resolved_lr(),
            weight_decay=cfg.weight_decay,
            warmup_frac=0.1,
            patience=cfg.patience if cfg.patience is not None else (4 if small else 2),
            seed=cfg.seed,
            augment=cfg.augment if cfg.augment is not None else src_card.config.get("augment", {}),
            ema_decay=cfg.ema_decay,
        )
        train = _tile(shots, cfg.min_epoch_samples) if small else shots
        res = fit(tcfg, out_dir, resume=resuming, quiet=quiet, train=train, val=val, test=data.test, evaluate=False,
                  model=model)
        model.eval()
        metrics = _test_metrics(model, data.test, cfg.n_boot)
        card = read_card(out_dir)
        card.task, card.classes, card.data = data.task, list(data.classes), provenance
        card.metrics = {**card.metrics, "test": metrics}
        save_checkpoint(out_dir, model, card)
        transfer["epochs_run"] = len(res.history)

    transfer["test"] = {key: metrics[key] for key in ("n", "accuracy", "balanced_accuracy", "f1", "roc_auc", "ece", "intervals") if key in metrics}
    write_json_atomic(out_dir / "metrics.json", jsonable(metrics), allow_nan=False)
    if full_report and data.source == "lymphomnist" and data.data_root:
        from lymphosort.evaluate.run import evaluate_run

        evaluate_run(out_dir, data.task, data.data_root, "test", n_boot=cfg.n_boot)
    # Last: the summary marks the folder finished.
    write_json_atomic(out_dir / SUMMARY_FILE, jsonable(transfer), allow_nan=False)
    return transfer


def redistill(
    teacher_run: str | os.PathLike[str],
    student_run: str | os.PathLike[str],
    data: TransferData,
    cfg: FinetuneConfig,
    out: str | os.PathLike[str],
    *,
    method: str | None = None,
    quiet: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Distil a fine-tuned teacher into the student of `student_run` on the same shots.

    The student starts from its own (source-task) checkpoint, head adapted as in
    `prepare_model`, and is trained by `train.fit` against `teacher_run` with the
    shipped distillation recipe (`DistillConfig`'s defaults) on exactly the shots the
    teacher saw (same seed and K): no extra labels, so the two routes compare fairly.
    `resume` as in `finetune`.
    """
    from lymphosort.atomic import write_json_atomic
    from lymphosort.models.checkpoint import jsonable, read_card, save_checkpoint
    from lymphosort.train.config import DistillConfig
    from lymphosort.train.fit import fit

    out_dir = Path(out)
    started = {"teacher_run": str(teacher_run), "student_run": str(student_run), "task": data.task,
               "classes": list(data.classes), "data": data.source, "data_root": data.data_root,
               "pool_split_id": data.pool.split_id, "method": method, "config": cfg.to_dict()}
    done = _begin(out_dir, resume, started)
    if done is not None:
        return done
    resuming = (out_dir / "last.ckpt").is_file()
    student, s_card, head_info, _, shots, val = _model_and_shots(student_run, data, cfg, "full")
    small = cfg.shots is not None and cfg.shots <= 100
    m = method or DistillConfig.method
    tcfg = DistillConfig(
        model=s_card.model,
        model_kwargs=dict(s_card.create_kwargs),
        task=data.task if data.source == "lymphomnist" else _placeholder_task(len(data.classes)),
        data_root=data.data_root or "",
        epochs=cfg.epochs or (15 if small else 4),
        batch_size=min(cfg.batch_size, max(2, len(shots))),
        lr=cfg.lr or 1e-3,
        weight_decay=cfg.weight_decay,
        warmup_frac=0.1,
        patience=cfg.patience if cfg.patience is not None else (4 if small else 2),
        seed=cfg.seed,
        augment=cfg.augment if cfg.augment is not None else s_card.config.get("augment", {}),
        ema_decay=cfg.ema_decay,
        teacher=str(teacher_run),
        method=m,
    )
    train = _tile(shots, cfg.min_epoch_samples) if small else shots
    fit(tcfg, out_dir, resume=resuming, quiet=quiet, train=train, val=val, test=data.test, evaluate=False,
        model=student)
    student.eval()
    metrics = _test_metrics(student, data.test, cfg.n_boot)
    transfer = {
        "route": "fine-tune teacher, re-distil",
        "teacher_run": str(teacher_run),
        "student_run": str(student_run),
        "task": data.task,
        "shots": shots_name(cfg.shots),
        "seed": cfg.seed,
        "method": m,
        "shot_rows": shots.indices.tolist(),
        "validation": data.validation,
        "head": head_info,
        "test": {key: metrics[key] for key in ("n", "accuracy", "balanced_accuracy", "roc_auc", "intervals")},
    }
    card = read_card(out_dir)
    card.task, card.classes = data.task, list(data.classes)
    card.data = {**dict(data.pool.provenance), "transfer": {k_: v for k_, v in transfer.items() if k_ != "shot_rows"}}
    card.metrics = {**card.metrics, "test": metrics}
    save_checkpoint(out_dir, student, card)
    write_json_atomic(out_dir / "metrics.json", jsonable(metrics), allow_nan=False)
    write_json_atomic(out_dir / SUMMARY_FILE, jsonable(transfer), allow_nan=False)
    return transfer

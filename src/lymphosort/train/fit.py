"""Training and distillation with Lightning: `fit()` runs one LightningModule (train.module)
on one DataModule (train.datamodule) with the run folder's Trainer (train.trainer).

Batches travel as uint8 [N, 64, 64] (cheap to move); on the device they are scaled to
[0, 1], augmented once as a batch at the base resolution, and only then converted per
model (`ModelSpec.prepare`), so a teacher and its student see the same augmented cells.
Plain training is distillation with method "none" and no teacher: one code path.

Devices, processes and precision are Lightning's job: accelerator "auto", and under
`torchrun --nproc_per_node=N` the same command runs DDP (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import lightning as L
import torch
from torch import nn

from lymphosort.data.transforms import AugmentConfig
from lymphosort.distill.losses import make_loss
from lymphosort.errors import ConfigError, DatasetNotFoundError
from lymphosort.train.callbacks import HistoryCallback, plot_history
from lymphosort.train.config import TrainConfig, save_config
from lymphosort.train.datamodule import LymphoDataModule, subset_tensors
from lymphosort.train.module import LymphoModule, default_feature_layers, spec_of
from lymphosort.train.trainer import (
    BEST_CKPT,
    LAST_CKPT,
    is_rank_zero,
    json_default,
    make_trainer,
    setup_run_logging,
)

if TYPE_CHECKING:
    from lymphosort.data.lymphomnist import SplitData

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data


# --------------------------------------------------------------------------- module


# --------------------------------------------------------------------------- fit()


@dataclass
class FitResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_val: dict[str, float]
    test_metrics: dict[str, Any] | None


def _check_data_root(root: str | Path) -> None:
    from lymphosort.data.lymphomnist import not_found_message, raw_files

    if not all(p.is_file() for p in raw_files(root).values()):
        raise DatasetNotFoundError(
            f"no dataset at {root}: create the default simulated one with "
            f"`lymphosort data synth --root {root}` (or see `lymphosort data --help`)"
            if not Path(root).exists()
            else not_found_message(root)
        )


def _load_teacher(cfg: TrainConfig, classes: Sequence[str]) -> tuple[nn.Module, Any]:
    from lymphosort.models.checkpoint import load_checkpoint

    teacher, card = load_checkpoint(cfg.teacher)
    t_task = getattr(card, "task", None)
    t_classes = tuple(getattr(card, "classes", ()) or ())
    if t_classes and tuple(t_classes) != tuple(classes):
        raise ConfigError(
            f"teacher {cfg.teacher} was trained for classes {t_classes} (task {t_task}) but this run's task "
            f"{cfg.task} has classes {tuple(classes)}"
        )
    return teacher, card


def _best_student_state(path: str | Path) -> dict[str, torch.Tensor] | None:
    if not path or not Path(path).is_file():
        return None
    # weights_only: loading never unpickles code, even from our own run folder.
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt.get("state_dict", {})
    return {k[len("student.") :]: v for k, v in sd.items() if k.startswith("student.")}


def _evaluate(run_dir: Path, cfg: TrainConfig, model: nn.Module, test: "SplitData | None") -> dict[str, Any]:
    """Test-split metrics: the shared `evaluate_run` (which also writes the evaluation files)
    on `data_root`, or the same metrics on the `test` data a caller passed in."""
    from lymphosort.evaluate.metrics import classification_metrics
    from lymphosort.evaluate.run import evaluate_run, predict_proba

    if test is None:
        return dict(evaluate_run(run_dir, cfg.task, cfg.data_root, split="test", split_version=cfg.split_version))
    probs = predict_proba(model, torch.as_tensor(test.images))
    return dict(classification_metrics(torch.as_tensor(test.labels).long().numpy(), probs, class_names=list(test.classes)))


def _make_card(
    cfg: TrainConfig, model: nn.Module, train: "SplitData", metrics: dict[str, Any], data_root: str | None
) -> Any:
    from lymphosort.models.checkpoint import DATA_ROOT_KEY, ModelCard

    data = dict(train.provenance)
    if data_root:
        data[DATA_ROOT_KEY] = str(data_root)
    return ModelCard.from_model(
        model,
        task=cfg.task,
        classes=list(train.classes),
        data=data,
        split_id=train.split_id,
        config=cfg.to_dict(),
        metrics=metrics,
    )


def fit(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    train: "SplitData | None" = None,
    val: "SplitData | None" = None,
    test: "SplitData | None" = None,
    evaluate: bool = True,
    model: nn.Module | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> FitResult:
    """Train (or distil, when `cfg.teacher` is set) and write the run folder `out`.

    `train`/`val`/`test` replace `load_split` (tests, notebooks). `model` replaces the fresh
    `create_model(cfg.model)`: a network already initialised (e.g. from a checkpoint for
    fine-tuning) whose parameters with `requires_grad=False` stay frozen. `callbacks` are added
    to the Trainer's own. last.ckpt is written after every epoch; with `resume`, training
    continues from it at the first unfinished epoch (optimiser, schedule, sampler epoch,
    random states, early stopping, best checkpoint, history), ending with the weights of an
    uninterrupted run. Returns on every rank; only global rank 0 writes files.
    """
    cfg.validate()
    run_dir = Path(out)
    last = run_dir / LAST_CKPT
    if resume and not last.is_file():
        raise ConfigError(f"nothing to resume: {last} does not exist")
    if not resume and last.is_file():
        raise ConfigError(f"{run_dir} already holds a training run; pass --resume to continue it or choose another --out")
    if train is None or val is None:
        _check_data_root(cfg.data_root)
    if is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
    # Logger levels are process-wide: a pipeline runs many fits in one process, so each fit
    # restores what it changed.
    touched = ("lymphosort", "lightning.pytorch", "lightning.fabric", "lightning")
    levels = {name: logging.getLogger(name).level for name in touched}
    handler = setup_run_logging(run_dir, quiet) if run_dir.exists() else None
    try:
        with warnings.catch_warnings():
            # Lightning advice that does not apply here (in-memory tensors, our run folder).
            for msg in (
                ".*does not have many workers.*",
                ".*exists and is not empty.*",
                ".*treespec.*LeafSpec.*",
                ".*module\\(s\\) in eval mode.*",  # the frozen teacher, on purpose
            ):
                warnings.filterwarnings("ignore", msg)
            return _fit(cfg, run_dir, last, resume, quiet, train, val, test, evaluate, model, callbacks)
    finally:
        if handler is not None:
            for name in ("lymphosort", "lightning.pytorch"):
                logging.getLogger(name).removeHandler(handler)
            handler.close()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _fit(  # one run's steps in order (data, models, loss, trainer, outputs): reads best as one block
    cfg: TrainConfig,
    run_dir: Path,
    last: Path,
    resume: bool,
    quiet: bool,
    train: "SplitData | None",
    val: "SplitData | None",
    test: "SplitData | None",
    evaluate: bool,
    model: nn.Module | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> FitResult:
    from lymphosort.data.info import task_view
    from lymphosort.models.registry import create_model
    from lymphosort.threads import ensure_threads

    ensure_threads()
    L.seed_everything(cfg.seed, workers=True, verbose=not quiet)
    view = task_view(cfg.task)
    loss = make_loss(cfg.method, **cfg.method_kwargs)
    teacher = None
    if cfg.teacher:
        teacher, _ = _load_teacher(cfg, view.classes)
    elif loss.needs_teacher:
        raise ConfigError(f"method {cfg.method!r} needs a teacher run (--teacher RUN)")
    dm = LymphoDataModule(cfg, train, val, independent_teacher=getattr(loss, "independent_teacher", False))
    dm.load()
    if model is not None:
        spec = getattr(model, "spec", None)
        if spec is None or spec.name != cfg.model or spec.num_classes != view.num_classes:
            raise ConfigError(f"the given model ({spec}) is not a {view.num_classes}-class {cfg.model!r}")
        student = model
    elif cfg.init_from and not resume:
        student = _init_from(cfg, view.num_classes, dm.train_split)
    else:
        student = create_model(cfg.model, num_classes=view.num_classes, **cfg.model_kwargs)
    s_layers, t_layers = list(cfg.student_layers or ()), list(cfg.teacher_layers or ())
    s_fov, t_fov = spec_of(student).fov, spec_of(teacher).fov if teacher is not None else None
    if loss.uses_features and teacher is not None and s_fov != t_fov:
        # Feature maps of different fields of view do not cover the same pixels.
        raise ConfigError(
            f"method {cfg.method!r} compares feature maps, but {cfg.model} sees a field of view of "
            f"{s_fov or 'the whole crop'} and the teacher {t_fov or 'the whole crop'}; "
            "use a logit method (kd, dkd) or a student with the teacher's field of view"
        )
    if loss.uses_features and teacher is not None and not (s_layers and t_layers):
        auto_s, auto_t = default_feature_layers(student, teacher)
        s_layers, t_layers = s_layers or auto_s, t_layers or auto_t
        cfg = cfg.replace(student_layers=s_layers, teacher_layers=t_layers)
    # Record the loss's and the augmentation's full settings (defaults included) in the
    # resolved config, so a run reads the same when a default changes later.
    cfg = cfg.replace(method_kwargs=loss.config())
    if cfg.augment is not None:
        cfg = cfg.replace(augment=AugmentConfig(**cfg.augment).to_dict())

    module = LymphoModule(
        student,
        loss,
        num_classes=view.num_classes,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_frac=cfg.warmup_frac,
        augment=cfg.augment,
        seed=cfg.seed,
        teacher=teacher,
        student_layers=s_layers if loss.uses_features else (),
        teacher_layers=t_layers if loss.uses_features else (),
        teacher_precision=cfg.teacher_precision,
    )
    if is_rank_zero():
        save_config(cfg, run_dir / "config.yaml")

    trainer = make_trainer(
        cfg, run_dir, quiet, n_train=min(len(dm.train_split), cfg.max_train_samples or 10**12), extra=callbacks
    )
    log.info(
        "%s %s (method %s): %d train / %d val images, world_size=%d, accelerator=%s, precision=%s, cpu_threads=%d",
        "resuming" if resume else "training", cfg.model, cfg.method, len(dm.train_split), len(dm.val_split),
        trainer.world_size, type(trainer.accelerator).__name__, trainer.precision, torch.get_num_threads(),
    )
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None)

    history = next(cb for cb in trainer.callbacks if isinstance(cb, HistoryCallback)).history
    # The best epoch's weights from this run folder's own best.ckpt (not the path Lightning
    # remembered, which points into the old folder when a run was moved or copied).
    best_state = _best_student_state(run_dir / BEST_CKPT)
    if best_state is not None:
        student.load_state_dict(best_state)
    student = student.cpu().eval()
    best_val = best_row(history, cfg.monitor)
    test_metrics = None
    if trainer.is_global_zero:
        # The data root goes on the card only when the data came from it (not passed in).
        root = cfg.data_root if train is None else None
        test_metrics = _finish_run(run_dir, cfg, student, dm.train_split, history, best_val, test, evaluate, root)
    return FitResult(run_dir, history, best_val, test_metrics)


def _init_from(cfg: TrainConfig, num_classes: int, train: "SplitData") -> nn.Module:
    """The model `cfg.model` holding the weights of run `cfg.init_from`.

    The same architecture loads as is. A float student starts its QAT twin (`<student>-q<bits>`):
    its weights are copied in and the activation ranges set from training images, so
    quantisation-aware training fine-tunes rather than starts from scratch.
    """
    from lymphosort.models.checkpoint import load_checkpoint
    from lymphosort.models.registry import canonical_name
    from lymphosort.models.quant import (
        float_name,
        init_activation_ranges,
        quantize_from_float,
    )

    src, _ = load_checkpoint(cfg.init_from)
    spec = src.spec
    if spec.num_classes != num_classes:
        raise ConfigError(f"--init-from {cfg.init_from} has {spec.num_classes} classes; task {cfg.task} needs {num_classes}")
    model_name = canonical_name(cfg.model)  # a former name (e.g. tiny-32-whole) is the same model
    if spec.name == model_name:
        return src.train()
    if float_name(model_name) != spec.name:
        raise ConfigError(
            f"--init-from {cfg.init_from} holds {spec.name!r}; it can start {spec.name!r} or its QAT twin, not {cfg.model!r}"
        )
    bits = cfg.model_kwargs.get("bits", int(cfg.model.rpartition("-q")[2]))
    widths = {k: v for k, v in cfg.model_kwargs.items() if k in ("input_bits", "act_bits", "weight_scale")}
    q = quantize_from_float(src, bits=bits, name=model_name, **widths)
    images = subset_tensors(train, 512, cfg.seed)[0]
    batches = (src.spec.prepare(images[i : i + 128]) for i in range(0, len(images), 128))
    init_activation_ranges(q, src, batches, mid_bin=q.weight_scale == "mse")
    return q.train()


def best_row(history: list[dict[str, Any]], monitor: str) -> dict[str, float]:
    """The history row (one per epoch) where `monitor` was best, as the checkpoint callback picks it."""
    rows = [h for h in history if h.get(monitor) is not None]
    if not rows:
        return {}
    pick = min if monitor == "val_loss" else max
    best = pick(rows, key=lambda h: h[monitor])
    return {k: v for k, v in best.items() if v is not None}


def _finish_run(
    run_dir: Path,
    cfg: TrainConfig,
    student: nn.Module,
    train: "SplitData",
    history: list[dict[str, Any]],
    best_val: dict[str, float],
    test: "SplitData | None",
    evaluate: bool,
    data_root: str | None = None,
) -> dict[str, Any] | None:
    from lymphosort.atomic import write_json_atomic
    from lymphosort.models.checkpoint import save_checkpoint

    metrics: dict[str, Any] = {"val": best_val, "epochs_run": len(history)}
    save_checkpoint(run_dir, student, _make_card(cfg, student, train, metrics, data_root))
    plot_history(history, run_dir / "curves.png")
    test_metrics = None
    if evaluate:
        test_metrics = _evaluate(run_dir, cfg, student, test)
        if test_metrics is not None:
            # Always rewritten: a resumed run's test metrics replace the earlier ones.
            write_json_atomic(run_dir / "metrics.json", test_metrics, default=json_default)
            metrics["test"] = test_metrics
            save_checkpoint(run_dir, student, _make_card(cfg, student, train, metrics, data_root))
    log.info("run folder: %s (best %s)", run_dir, best_val)
    return test_metrics



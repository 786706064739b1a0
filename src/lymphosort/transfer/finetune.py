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
import hashlib
import json
import logging
import math
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lymphosort.data.lymphomnist import SplitData
from lymphosort.errors import ConfigError

__all__ = [
    "MODES",
    "FeatureCache",
    "FinetuneConfig",
    "TransferData",
    "draw_shots",
    "finetune",
    "folder_data",
    "freeze_for",
    "last_stage",
    "lymphomnist_data",
    "parse_shots",
    "prepare_model",
    "redistill",
    "subset",
]

log = logging.getLogger(__name__)

Mode = Literal["linear", "partial", "full"]
MODES: tuple[str, ...] = ("linear", "partial", "full")
#: Default learning rates: the head alone tolerates a large step, the whole network does not.
DEFAULT_LR = {"linear": 1e-2, "partial": 1e-3, "full": 3e-4}
#: Folder split (per class): fractions for test and validation; the rest is the shot pool.
FOLDER_TEST_FRAC, FOLDER_VAL_FRAC = 0.3, 0.2
#: Smallest class a lab folder may have: 1 shot + 1 validation + 1 test image.
FOLDER_MIN_PER_CLASS = 3


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class TransferData:
    """Where shots come from (`pool`), the validation set and the test set of one task."""

    pool: SplitData
    val: SplitData
    test: SplitData
    task: str
    classes: tuple[str, ...]
    #: "lymphomnist" (data_root splits) or "folder" (a lab folder split here).
    source: str
    #: how validation was chosen, for the report.
    validation: str
    data_root: str | None = None


def subset(data: SplitData, pos: np.ndarray | Sequence[int], split: str | None = None) -> SplitData:
    """Rows `pos` of a split (source rows in `indices` follow them)."""
    ix = torch.as_tensor(np.asarray(pos, dtype=np.int64))
    return dataclasses.replace(
        data,
        images=data.images[ix],
        labels=data.labels[ix],
        indices=data.indices[ix] if len(data.indices) else ix,
        split=split or data.split,
    )


def _cap(data: SplitData, n: int | None, seed: int = 0) -> SplitData:
    """A seeded, class-stratified subset of at most `n` rows (validation on 2 CPU cores)."""
    if n is None or len(data) <= n:
        return data
    labels = data.labels.numpy()
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        keep.append(rng.permutation(rows)[: max(1, round(n * len(rows) / len(labels)))])
    return subset(data, np.sort(np.concatenate(keep)))


def lymphomnist_data(data_root: str | os.PathLike[str], task: str, split_version: str = "v1") -> TransferData:
    """Pool = train split, validation = val split, test = test split (all of `task`)."""
    from lymphosort.data.info import task_view
    from lymphosort.data.lymphomnist import load_split

    view = task_view(task)
    return TransferData(
        pool=load_split(data_root, "train", task, split_version),
        val=load_split(data_root, "val", task, split_version),
        test=load_split(data_root, "test", task, split_version),
        task=task,
        classes=tuple(view.classes),
        source="lymphomnist",
        validation="val split (part of the official test file; shots come from the train file)",
        data_root=str(data_root),
    )


def folder_data(
    path: str | os.PathLike[str], classes: Sequence[str] | None = None, split_seed: int = 0, size: int = 64
) -> TransferData:
    """A lab folder (class subfolders or CSV) split per class into pool / val / test.

    The split depends only on the files and `split_seed` (not on the shot seed), so every
    K and seed of a curve is tested on the same images. Tiny classes are refused with a
    message that says how many images are needed.
    """
    from lymphosort.data.folder import FolderDataError, load_folder

    fd = load_folder(path, size=size, classes=classes, progress=False)
    labels = fd.labels.numpy()
    counts = {c: int((labels == i).sum()) for i, c in enumerate(fd.classes)}
    small = {c: n for c, n in counts.items() if n < FOLDER_MIN_PER_CLASS}
    if len(fd.classes) < 2:
        raise FolderDataError(f"{path}: need at least two class subfolders, found {list(fd.classes)}")
    if small:
        raise FolderDataError(
            f"{path}: too few images in class(es) {small}; each class needs at least {FOLDER_MIN_PER_CLASS} "
            "(1 shot, 1 validation, 1 test) and realistically 20 or more for a meaningful report"
        )
    rng = np.random.default_rng(split_seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for i in range(len(fd.classes)):
        rows = rng.permutation(np.flatnonzero(labels == i))
        n_test = max(1, int(round(len(rows) * FOLDER_TEST_FRAC)))
        n_val = max(1, int(round(len(rows) * FOLDER_VAL_FRAC)))
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test : n_test + n_val])
        parts["train"].append(rows[n_test + n_val :])
    h = hashlib.sha256()
    for p_, lab in zip(fd.paths, labels.tolist()):
        h.update(f"{p_.name}:{lab};".encode())
    split_id = f"folder-{h.hexdigest()[:8]}-s{split_seed}"
    whole = SplitData(
        images=fd.images,
        labels=fd.labels,
        classes=tuple(fd.classes),
        task="folder",
        split="all",
        split_id=split_id,
        provenance={**fd.provenance, "split_seed": split_seed},
        indices=torch.arange(len(fd), dtype=torch.int64),
    )
    made = {k: subset(whole, np.sort(np.concatenate(v)), split=k) for k, v in parts.items()}
    return TransferData(
        pool=made["train"],
        val=made["val"],
        test=made["test"],
        task="folder",
        classes=tuple(fd.classes),
        source="folder",
        validation=(
            f"{FOLDER_VAL_FRAC:.0%} of each class of the folder (test {FOLDER_TEST_FRAC:.0%}, rest = shot pool), "
            f"seeded split {split_seed}"
        ),
    )


def parse_shots(value: str | int | None) -> int | None:
    """'all' (or None) -> None; otherwise a positive count per class."""
    if value is None or (isinstance(value, str) and value.lower() == "all"):
        return None
    k = int(value)
    if k < 1:
        raise ConfigError(f"shots must be >= 1 or 'all', got {value!r}")
    return k


def shots_name(k: int | None) -> str:
    return "all" if k is None else str(k)


def draw_shots(labels: np.ndarray | torch.Tensor, k: int | None, seed: int, num_classes: int) -> np.ndarray:
    """Sorted positions of `k` examples of every class (class-balanced), or all when k is None.

    Each class draws from its own seeded stream, so the K=5 shots of a seed are the first
    five of its K=10 shots (nested curves, less noise between K).
    """
    labels = np.asarray(labels)
    if k is None:
        return np.arange(len(labels))
    picks = []
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        if len(rows) < k:
            raise ConfigError(f"class {c} has only {len(rows)} examples in the shot pool; cannot draw {k} shots")
        rng = np.random.default_rng([seed, c])
        picks.append(rng.permutation(rows)[:k])
    return np.sort(np.concatenate(picks))


# --------------------------------------------------------------------------- model


def _init_head_by_name(old: nn.Linear, new: nn.Linear, old_classes: Sequence[str], new_classes: Sequence[str]) -> list[str]:
    """Copy head rows for classes the old head already knew (T4/T8 start from "T")."""
    copied = []
    with torch.no_grad():
        for j, c in enumerate(new_classes):
            src = c if c in old_classes else ("T" if c in ("T4", "T8") and "T" in old_classes else None)
            if src is not None:
                i = list(old_classes).index(src)
                new.weight[j] = old.weight[i]
                new.bias[j] = old.bias[i]
                copied.append(f"{c}<-{src}")
    return copied


def last_stage(model: nn.Module) -> str:
    """Module path of the last feature stage: the model's last declared feature module if it
    holds parameters (ResNet `layer4`), else the last parameterised leaf before the head."""
    modules = dict(model.named_modules())
    declared = list(getattr(model, "FEATURE_MODULES", ()) or ())
    if declared and any(True for _ in modules[declared[-1]].parameters()):
        return declared[-1]
    leaves = [
        n for n, m in model.named_modules()
        if n and not n.startswith("head") and any(True for _ in m.parameters(recurse=False))
    ]
    if not leaves:
        raise ConfigError(f"{type(model).__name__} has no parameterised feature stage")
    return leaves[-1]


def _pin_eval(module: nn.Module) -> None:
    # Frozen BatchNorm must keep its running statistics: Lightning calls .train() on the
    # whole model each epoch, so this instance ignores it.
    module.eval()
    module.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), module)  # type: ignore[method-assign]


def freeze_for(model: nn.Module, mode: str) -> list[str]:
    """Set `requires_grad` for `mode`; return the trainable module prefixes."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    trainable = {"linear": ["head"], "partial": [last_stage(model), "head"], "full": [""]}[mode]
    for name, p in model.named_parameters():
        p.requires_grad_(any(name == t or name.startswith(t + ".") or t == "" for t in trainable))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                _pin_eval(m)
    return trainable


def prepare_model(
    run_dir: str | os.PathLike[str], classes: Sequence[str], mode: str, reset_head: bool = False
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Load `run_dir`, fit its head to `classes` and freeze for `mode`.

    The head is kept when the class names match (a T4-vs-B "T" is the T8-vs-B "T": the
    fine-tuning starts from the zero-shot model); otherwise it is reset and rows of known
    classes are copied over. Returns (model, source card, head info).
    """
    from lymphosort.models.checkpoint import load_checkpoint

    model, card = load_checkpoint(run_dir)
    old_classes = list(card.classes)
    info: dict[str, Any] = {"source_classes": old_classes, "kept": True, "copied": []}
    if reset_head or tuple(old_classes) != tuple(classes):
        old = model.head
        model.reset_classifier(len(classes))
        info["kept"] = False
        if not reset_head:
            info["copied"] = _init_head_by_name(old, model.head, old_classes, classes)
    info["trainable"] = freeze_for(model, mode)
    return model, card, info


# --------------------------------------------------------------------------- linear fast path


class FeatureCache:
    """`forward_features` of one frozen extractor, computed once per image and reused
    across shot counts and seeds (rows are filled on demand)."""

    def __init__(self, model: nn.Module, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = batch_size
        self._store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()  # not inference_mode: the cached rows feed the head's autograd
    def get(self, data: SplitData, pos: np.ndarray | None = None) -> torch.Tensor:
        key = id(data.images)
        n = len(data)
        pos = np.arange(n) if pos is None else np.asarray(pos)
        if key not in self._store:
            self._store[key] = (torch.zeros(n, self.model.num_features), torch.zeros(n, dtype=torch.bool))
        feats, done = self._store[key]
        missing = np.asarray(pos)[~done[torch.as_tensor(pos)].numpy()]
        if len(missing):
            spec = self.model.spec
            self.model.eval()
            for s in range(0, len(missing), self.batch_size):
                rows = torch.as_tensor(missing[s : s + self.batch_size])
                x = spec.prepare(data.images[rows])
                feats[rows] = self.model.forward_features(x).float()
                done[rows] = True
        return feats[torch.as_tensor(pos)]


def _fit_head(
    head: nn.Linear,
    f_tr: torch.Tensor,
    y_tr: torch.Tensor,
    f_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    lr: float,
    weight_decay: float,
    max_steps: int,
    patience: int,
    seed: int,
) -> list[dict[str, float]]:
    """Full-batch AdamW on the head with class-balanced cross-entropy; the state with the
    best validation balanced accuracy (ties: lower loss) is kept (early stopping)."""
    torch.manual_seed(seed)
    counts = torch.bincount(y_tr, minlength=head.out_features).float()
    weight = torch.where(counts > 0, counts.sum() / (len(counts) * counts.clamp(min=1)), torch.zeros_like(counts))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    best: tuple[float, float] = (-1.0, math.inf)
    best_state = {k: v.clone() for k, v in head.state_dict().items()}
    history, bad, check_every = [], 0, 10
    for step in range(max_steps + 1):
        if step % check_every == 0:
            with torch.no_grad():
                logits = head(f_val)
                v_loss = float(F.cross_entropy(logits, y_val))
                pred = logits.argmax(1)
                recalls = [float((pred[y_val == c] == c).float().mean()) for c in torch.unique(y_val)]
                v_bacc = float(np.mean(recalls))
            history.append({"step": step, "val_loss": v_loss, "val_bacc": v_bacc})
            # A loss gain counts only if it is real (>1%): separable shots would otherwise
            # "improve" forever as the logits grow.
            if v_bacc > best[0] or (v_bacc == best[0] and v_loss < best[1] * 0.99):
                best, bad = (v_bacc, v_loss), 0
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
            else:
                bad += 1
                if bad > patience:
                    break
        if step == max_steps:
            break
        opt.zero_grad()
        loss = F.cross_entropy(head(f_tr), y_tr, weight=weight)
        loss.backward()
        opt.step()
    head.load_state_dict(best_state)
    return history


# --------------------------------------------------------------------------- fine-tune


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
    return model, card, head_info, shot_pos, shots, _cap(data.val, cfg.max_val_samples)


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


def finetune(
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
        history = _fit_head(
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

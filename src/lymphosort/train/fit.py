"""Training and distillation with Lightning: one LightningModule, one DataModule, `fit()`.

Batches travel as uint8 [N, 64, 64] (cheap to move); on the device they are scaled to
[0, 1], augmented once as a batch at the base resolution, and only then converted per
model (`ModelSpec.prepare`), so a teacher and its student see the same augmented cells.
Plain training is distillation with method "none" and no teacher: one code path.

Devices, processes and precision are Lightning's job: accelerator "auto", and under
`torchrun --nproc_per_node=N` the same command runs DDP (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lymphosort.models.hooks import FeatureCapture, spatial_module_paths
from lymphosort.distill.losses import DistillLoss, make_loss
from lymphosort.errors import ConfigError, DatasetNotFoundError
from lymphosort.train.callbacks import HistoryCallback, plot_history, warmup_cosine
from lymphosort.train.config import TEACHER_PRECISIONS, TrainConfig, save_config

if TYPE_CHECKING:
    from lymphosort.data.lymphomnist import SplitData
    from lymphosort.models.registry import ModelSpec

log = logging.getLogger(__name__)

#: Files of a run folder written here (besides model.safetensors/model.json).
LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"
#: Checkpoint entry holding the global random states (see `rng_states`).
RNG_KEY = "lymphosort_rng_states"


# --------------------------------------------------------------------------- data


class _EpochSeeded(Sampler[int]):
    """A sampler whose draw is deterministic per (seed, epoch): Lightning calls `set_epoch`,
    so a resumed run draws the same batches as an uninterrupted one."""

    def __init__(self, seed: int) -> None:
        self.seed, self.epoch = int(seed), 0
        self._auto = 0  # iterations without set_epoch (e.g. inside a wrapper) still vary

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._auto = 0

    def _generator(self) -> torch.Generator:
        """This iteration's generator (the next one without a `set_epoch` in between)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7_919 + self._auto)
        self._auto += 1
        return g


class ShuffleSampler(_EpochSeeded):
    """A permutation of all indices, deterministic per (seed, epoch) like `BalancedSampler`.

    Replaces `DataLoader(shuffle=True, generator=...)`, whose generator advances from epoch
    to epoch in memory only: a resumed run would replay epoch 1's order.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        super().__init__(seed)
        self.n = int(n)

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self._generator()).tolist())

    def __len__(self) -> int:
        return self.n


class BalancedSampler(_EpochSeeded):
    """Indices drawn with replacement, each class equally likely (weights 1/class count).

    Deterministic per (seed, epoch) (see `_EpochSeeded`). Under DDP Lightning wraps it so
    each rank takes its own share of the same draw.
    """

    def __init__(self, labels: torch.Tensor, num_samples: int | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        labels = torch.as_tensor(labels).long()
        counts = torch.bincount(labels).double()
        weights = torch.where(counts[labels] > 0, 1.0 / counts[labels], torch.zeros_like(counts[labels]))
        self.weights = weights
        self.num_samples = int(num_samples if num_samples is not None else len(labels))

    def __iter__(self) -> Iterator[int]:
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self._generator())
        return iter(idx.tolist())

    def __len__(self) -> int:
        return self.num_samples


class TensorBatches(Dataset):
    """uint8 images + labels, fetched a whole batch at a time (`__getitems__`, no per-item
    Python or collation). With `teacher_perm`, also returns images at independently
    shuffled positions for the teacher (the reference recipe's separate teacher loader).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, teacher_perm: torch.Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise ValueError(f"expected uint8 images [N,H,W], got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels, self.teacher_perm = images, labels.long(), teacher_perm

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return self.__getitems__([i])

    def __getitems__(self, idx: Sequence[int]) -> tuple[torch.Tensor, ...]:
        ix = torch.as_tensor(list(idx), dtype=torch.long)
        out = (self.images[ix], self.labels[ix])
        if self.teacher_perm is not None:
            out = out + (self.images[self.teacher_perm[ix]],)
        return out


def _collate_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    # __getitems__ already returns stacked tensors.
    return batch


def _subset(data: "SplitData", n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = torch.as_tensor(data.images), torch.as_tensor(data.labels).long()
    if n is not None and n < len(labels):
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        images, labels = images[keep], labels[keep]
    return images, labels


class LymphoDataModule(L.LightningDataModule):
    """Train/val loaders over `load_split` tensors (or SplitData given directly, for tests)."""

    def __init__(
        self,
        cfg: TrainConfig,
        train: "SplitData | None" = None,
        val: "SplitData | None" = None,
        independent_teacher: bool = False,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.train_split, self.val_split = train, val
        self.independent_teacher = independent_teacher
        self.train_ds: TensorBatches | None = None
        self.val_ds: TensorBatches | None = None

    def load(self) -> None:
        """Read the splits (idempotent; also called before the Trainer exists)."""
        if self.train_split is None or self.val_split is None:
            from lymphosort.data.lymphomnist import load_split

            cfg = self.cfg
            self.train_split = self.train_split or load_split(cfg.data_root, "train", cfg.task, cfg.split_version)
            self.val_split = self.val_split or load_split(cfg.data_root, "val", cfg.task, cfg.split_version)

    def setup(self, stage: str | None = None) -> None:
        if self.train_ds is not None:
            return
        self.load()
        assert self.train_split is not None and self.val_split is not None
        cfg = self.cfg
        images, labels = _subset(self.train_split, cfg.max_train_samples, cfg.seed)
        perm = None
        if self.independent_teacher:
            perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed + 1))
        self.train_ds = TensorBatches(images, labels, perm)
        v_images, v_labels = _subset(self.val_split, cfg.max_val_samples, cfg.seed)
        self.val_ds = TensorBatches(v_images, v_labels)

    def train_dataloader(self) -> DataLoader:
        assert self.train_ds is not None
        cfg = self.cfg
        # Both samplers draw from (seed, epoch) alone, so a resumed epoch sees the same batches.
        sampler: Sampler[int]
        if cfg.balanced:
            sampler = BalancedSampler(self.train_ds.labels, seed=cfg.seed)
        else:
            sampler = ShuffleSampler(len(self.train_ds), seed=cfg.seed)
        return DataLoader(
            self.train_ds,
            batch_size=cfg.batch_size,
            sampler=sampler,
            collate_fn=_collate_batch,
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
            # Keep the last partial batch unless it would be a single image (BatchNorm).
            drop_last=len(self.train_ds) % cfg.batch_size == 1,
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_ds is not None
        return DataLoader(
            self.val_ds,
            batch_size=max(self.cfg.batch_size, 256),
            shuffle=False,
            collate_fn=_collate_batch,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )


# --------------------------------------------------------------------------- module


def _spec_of(model: nn.Module) -> "ModelSpec":
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ConfigError(f"{type(model).__name__} has no .spec (build models with models.registry.create_model)")
    return spec


def _feature_shapes(model: nn.Module, paths: Sequence[str]) -> dict[str, tuple[int, ...]]:
    size = _spec_of(model).input_size
    example = torch.zeros(2, 1, size, size, device=next(model.parameters()).device)
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FeatureCapture(model, paths) as cap:
            model(example)
    finally:
        model.train(was)
    return {p: tuple(t.shape) for p, t in cap.features.items() if isinstance(t, torch.Tensor)}


def default_feature_layers(student: nn.Module, teacher: nn.Module) -> tuple[list[str], list[str]]:
    """One (student, teacher) layer pair for attention transfer, found from the models.

    Student: its last declared `FEATURE_MODULES` entry with a 4-D output (else the last
    module with one). Teacher: among its declared feature modules with 4-D outputs, the
    one whose spatial size is closest to the student's (the deeper one on ties).
    """

    def candidates(model: nn.Module) -> dict[str, tuple[int, ...]]:
        paths = list(getattr(model, "FEATURE_MODULES", ()) or ())
        if not paths:
            size = _spec_of(model).input_size
            paths = spatial_module_paths(model, torch.zeros(2, 1, size, size, device=next(model.parameters()).device))
        shapes = _feature_shapes(model, paths)
        return {p: s for p, s in shapes.items() if len(s) == 4}

    s_cand, t_cand = candidates(student), candidates(teacher)
    if not s_cand or not t_cand:
        raise ConfigError("attention transfer needs 4-D feature maps in both models; pass --student-layers/--teacher-layers")
    s_path = list(s_cand)[-1]
    s_hw = s_cand[s_path][-1]
    t_path = min(reversed(list(t_cand)), key=lambda p: abs(math.log(t_cand[p][-1] / s_hw)))
    return [s_path], [t_path]


class LymphoModule(L.LightningModule):
    """A registered model trained with a pluggable loss, optionally against a frozen teacher."""

    def __init__(
        self,
        student: nn.Module,
        loss: DistillLoss,
        *,
        num_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_frac: float = 0.05,
        augment: Any = None,
        seed: int = 0,
        teacher: nn.Module | None = None,
        student_layers: Sequence[str] = (),
        teacher_layers: Sequence[str] = (),
        teacher_precision: str = "32",
    ) -> None:
        super().__init__()
        from torchmetrics.classification import MulticlassAccuracy

        from lymphosort.data.transforms import AugmentConfig, BatchAugment

        self.student = student
        self.loss_fn = loss
        self.num_classes = int(num_classes)
        self.lr, self.weight_decay, self.warmup_frac = float(lr), float(weight_decay), float(warmup_frac)
        self.seed = int(seed)
        if isinstance(augment, dict):
            augment = AugmentConfig(**augment)
        self.augment = BatchAugment(augment) if augment is not None and not augment.is_identity else None
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
            # The teacher comes from its own run folder; keep it out of last.ckpt.
            self.strict_loading = False
        self.student_layers, self.teacher_layers = list(student_layers), list(teacher_layers)
        dtype = TEACHER_PRECISIONS[teacher_precision]
        self.teacher_dtype: torch.dtype | None = getattr(torch, dtype) if dtype else None
        self.train_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        # Macro-averaged recall = balanced accuracy.
        self.val_bacc = MulticlassAccuracy(num_classes=self.num_classes, average="macro")
        self._gen: torch.Generator | None = None
        # Kept out of the module tree (so out of state_dict and checkpoints): a derived cache.
        self.__dict__["_teacher_graph"] = None

    # The teacher stays in eval mode whatever Lightning toggles (BatchNorm statistics frozen).
    def train(self, mode: bool = True) -> "LymphoModule":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def on_train_epoch_start(self) -> None:
        # One CPU generator reseeded per (seed, epoch, rank): augmentation is reproducible,
        # identical after a resume, and different on each DDP rank.
        self._gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.current_epoch * 7_919 + self.global_rank)

    def _to_input(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return _spec_of(model).prepare(x)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        x = images.unsqueeze(1).float().div_(255.0)  # [N,1,64,64] in [0,1] on the device
        if self.augment is not None:
            x = self.augment(x, self._gen)
        x, targets = self.loss_fn.mix(x, labels, self.num_classes, self._gen)

        with FeatureCapture(self.student, self.student_layers) as s_cap:
            logits = self.student(self._to_input(self.student, x))
        t_logits, t_feats = None, []
        tx = x  # the very same augmented pixels, resized for the teacher
        if self.teacher is not None and getattr(self.loss_fn, "independent_teacher", False) and len(batch) > 2:
            # The reference's separately shuffled teacher batch. Drawn and augmented even when
            # the loss ignores the teacher: that keeps the random stream (the student's batches).
            tx = batch[2].unsqueeze(1).float().div_(255.0)
            tx = self.augment(tx, self._gen) if self.augment is not None else tx
        if self.teacher is not None and self.loss_fn.needs_teacher:
            with torch.no_grad(), FeatureCapture(self.teacher, self.teacher_layers) as t_cap:
                t_logits = self._teacher_forward(self._to_input(self.teacher, tx))
            t_feats = [f.float() for f in t_cap.get()] if self.teacher_layers else []
        s_feats = s_cap.get() if self.student_layers else []
        loss, parts = self.loss_fn(logits, t_logits, targets, s_feats, t_feats)

        n = images.shape[0]
        hard = targets.argmax(1) if targets.dim() == 2 else targets
        self.train_acc(logits.detach(), hard)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=n)
        for k, v in parts.items():
            self.log(f"train_{k}", v, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def _teacher_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's logits. Its forward is most of a distillation step's cost, so
        without feature hooks (which need the eager modules) it runs as a frozen TorchScript
        graph, BatchNorm folded into the convs: ~1.6x faster on CPU, same logits to ~1e-6.
        With `teacher_precision="bf16"` it runs eagerly under bfloat16 autocast instead (hooks
        still work; ~1.7x faster than the graph on an AVX512-BF16 CPU, logits to ~0.03)."""
        assert self.teacher is not None
        if self.teacher_dtype is not None:
            # Autocast, not a cast of the weights: BatchNorm and the logits stay float32.
            with torch.autocast(x.device.type, dtype=self.teacher_dtype):
                return self.teacher(x).float()
        if self.teacher_layers or torch.is_autocast_enabled():
            return self.teacher(x)
        graph = self.__dict__["_teacher_graph"]
        if graph is None:
            graph = self.__dict__["_teacher_graph"] = freeze_for_inference(self.teacher, x)
        return graph(x)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        images, labels = batch[0], batch[1]
        logits = self.student(self._to_input(self.student, images))
        loss = F.cross_entropy(logits, labels)
        self.val_acc(logits, labels)
        self.val_bacc(logits, labels)
        n = images.shape[0]
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val_acc", self.val_acc, on_epoch=True, batch_size=n)
        self.log("val_bacc", self.val_bacc, on_epoch=True, prog_bar=True, batch_size=n)

    def configure_optimizers(self) -> Any:
        # No weight decay on biases and normalisation parameters (1-D tensors).
        params = [p for p in self.student.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
        )
        total = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(int(self.warmup_frac * total), total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning saves optimiser, scheduler, loops and callbacks but not the global random
        # state; with it a resumed run draws exactly what an uninterrupted one would.
        checkpoint[RNG_KEY] = rng_states()
        # With weight averaging the checkpoint holds both states and Lightning reloads both
        # strictly on resume, so the teacher's keys stay there.
        if self.teacher is not None and "current_model_state" not in checkpoint:
            sd = checkpoint.get("state_dict", {})
            for k in [k for k in sd if k.startswith("teacher.")]:
                del sd[k]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs before the first resumed epoch builds its data iterators (which draw from the
        # global generator), so the restored state is the one the epoch started with.
        if RNG_KEY in checkpoint:
            set_rng_states(checkpoint[RNG_KEY])
        else:
            log.warning("checkpoint predates saved random states: the resumed run may differ from an uninterrupted one")
        log.info("resuming after epoch %d", int(checkpoint.get("epoch", -1)) + 1)


# --------------------------------------------------------------------------- fit()


def rng_states() -> dict[str, Any]:
    """The global random states (torch CPU and CUDA, numpy, random) as checkpoint-safe
    values: tensors, lists and ints only, so `torch.load(weights_only=True)` reads them."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states` returned."""
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def freeze_for_inference(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """`model` traced, frozen and optimised for inference on `example`'s device, or `model`
    itself where tracing fails or would be wrong (data-dependent control flow)."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # A tracer warning means Python control flow read tensor values: the trace
            # would bake in one branch, so it is an error here.
            warnings.simplefilter("error", torch.jit.TracerWarning)
            # TorchScript is deprecated, not gone: when it is, the except below runs eagerly.
            warnings.simplefilter("ignore", DeprecationWarning)
            graph = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model.eval(), example)))
            torch.testing.assert_close(graph(example), model(example), rtol=1e-3, atol=1e-4)
        return graph
    except Exception as exc:  # noqa: BLE001 - any tracing failure just means eager mode
        log.warning("teacher runs eagerly (tracing failed: %s)", exc)
        return model


def is_rank_zero() -> bool:
    """True in a single process and on global rank 0 of a torchrun job."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)) or 0) == 0


def distributed_setup(cfg: TrainConfig) -> tuple[Any, int, str]:
    """(devices, num_nodes, strategy) for Lightning, honouring a torchrun environment."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world) or world)
        strategy = cfg.strategy if cfg.strategy != "auto" else "ddp"
        return local, max(1, world // local), strategy
    return cfg.devices, 1, cfg.strategy


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


def _setup_logging(run_dir: Path, quiet: bool) -> logging.Handler | None:
    if quiet:
        for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not is_rank_zero():
        return None
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    # Quiet keeps Lightning's own messages at WARNING (in the log file too).
    for name in ("lymphosort",) if quiet else ("lymphosort", "lightning.pytorch"):
        lg = logging.getLogger(name)
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
    return handler


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
    from lymphosort.evaluate.run import evaluate_run, predict_proba
    from lymphosort.evaluate.metrics import classification_metrics

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
    handler = _setup_logging(run_dir, quiet) if run_dir.exists() else None
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


def _fit(
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
    s_fov, t_fov = _spec_of(student).fov, _spec_of(teacher).fov if teacher is not None else None
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
    # Record the loss's full hyper-parameters (defaults included) in the resolved config.
    cfg = cfg.replace(method_kwargs=loss.config())

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

    trainer = _make_trainer(
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
    from lymphosort.models.quant import float_name, init_activation_ranges, quantize_from_float
    from lymphosort.models.checkpoint import load_checkpoint

    src, _ = load_checkpoint(cfg.init_from)
    spec = src.spec
    if spec.num_classes != num_classes:
        raise ConfigError(f"--init-from {cfg.init_from} has {spec.num_classes} classes; task {cfg.task} needs {num_classes}")
    if spec.name == cfg.model:
        return src.train()
    if float_name(cfg.model) != spec.name:
        raise ConfigError(
            f"--init-from {cfg.init_from} holds {spec.name!r}; it can start {spec.name!r} or its QAT twin, not {cfg.model!r}"
        )
    bits = cfg.model_kwargs.get("bits", int(cfg.model.rpartition("-q")[2]))
    q = quantize_from_float(src, bits=bits, input_bits=int(cfg.model_kwargs.get("input_bits", 8)))
    images = _subset(train, 512, cfg.seed)[0]
    init_activation_ranges(q, src, (src.spec.prepare(images[i : i + 128]) for i in range(0, len(images), 128)))
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
            write_json_atomic(run_dir / "metrics.json", test_metrics, default=_json_default)
            metrics["test"] = test_metrics
            save_checkpoint(run_dir, student, _make_card(cfg, student, train, metrics, data_root))
    log.info("run folder: %s (best %s)", run_dir, best_val)
    return test_metrics


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint files, written under a temporary name and renamed: a run
    killed while saving keeps the previous last.ckpt / best.ckpt intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        from lymphosort.atomic import atomic_write

        atomic_write(path, lambda tmp: TorchCheckpointIO.save_checkpoint(self, checkpoint, tmp, storage_options))


def _make_trainer(
    cfg: TrainConfig, run_dir: Path, quiet: bool, n_train: int, extra: Sequence[L.Callback] = ()
) -> L.Trainer:
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    mode = "min" if cfg.monitor == "val_loss" else "max"
    callbacks: list[L.Callback] = [
        HistoryCallback(run_dir),
        # The best epoch's weights (what the run folder's model is made from) ...
        ModelCheckpoint(
            dirpath=run_dir,
            filename=BEST_CKPT[: -len(".ckpt")],
            monitor=cfg.monitor,
            mode=mode,
            save_top_k=1,
            enable_version_counter=False,
        ),
        # ... and, after it (so it stores the best-checkpoint state of the same epoch), the
        # state after every epoch for --resume. save_last on the monitored callback would only
        # be written when the score improves: a resume would lose the epochs since the best.
        ModelCheckpoint(
            dirpath=run_dir,
            filename=LAST_CKPT[: -len(".ckpt")],
            monitor=None,
            save_top_k=1,
            every_n_epochs=1,
            enable_version_counter=False,
        ),
        LearningRateMonitor(logging_interval="epoch"),
        *extra,
    ]
    if cfg.ema_decay is not None:
        from lightning.pytorch.callbacks import EMAWeightAveraging

        callbacks.append(EMAWeightAveraging(decay=float(cfg.ema_decay)))
    if cfg.patience > 0:
        callbacks.append(EarlyStopping(monitor=cfg.monitor, mode=mode, patience=cfg.patience))
    show_bar = not quiet and sys.stdout.isatty()
    if show_bar:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    devices, num_nodes, strategy = distributed_setup(cfg)
    steps_per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    return L.Trainer(
        max_epochs=cfg.epochs,
        accelerator=cfg.accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=cfg.precision,  # type: ignore[arg-type]
        default_root_dir=run_dir,
        logger=CSVLogger(run_dir, name="logs", version=""),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=show_bar,
        enable_model_summary=not quiet,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
    )

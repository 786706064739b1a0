"""The one LightningModule: a model (and, for distillation, a frozen teacher and feature hooks)
trained with a loss from `distill.losses`; the RNG state it saves makes resume bit-identical."""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lymphosort.distill.losses import DistillLoss
from lymphosort.errors import ConfigError
from lymphosort.models.hooks import FeatureCapture, spatial_module_paths
from lymphosort.train.callbacks import warmup_cosine
from lymphosort.train.config import TEACHER_PRECISIONS

if TYPE_CHECKING:
    from lymphosort.models.registry import ModelSpec

log = logging.getLogger(__name__)

#: Files of a run folder written here (besides model.safetensors/model.json).


#: Checkpoint entry holding the global random states (see `rng_states`).
RNG_KEY = "lymphosort_rng_states"


def spec_of(model: nn.Module) -> "ModelSpec":
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ConfigError(f"{type(model).__name__} has no .spec (build models with models.registry.create_model)")
    return spec


def _feature_shapes(model: nn.Module, paths: Sequence[str]) -> dict[str, tuple[int, ...]]:
    size = spec_of(model).input_size
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
            size = spec_of(model).input_size
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
        return spec_of(model).prepare(x)

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

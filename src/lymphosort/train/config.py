"""The configs of `lymphosort train` (TrainConfig) and `lymphosort distill` (DistillConfig,
whose defaults ARE the shipped distillation recipe): saved resolved to every run folder.

Configs are plain data (YAML read with `yaml.safe_load`, or JSON): nothing in them is
executed, so a run folder can be shared and re-read safely. Flags and files come from
`lymphosort.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from lymphosort import config as _config
from lymphosort.data.info import DEFAULT_ROOT
from lymphosort.errors import ConfigError

#: The embedded default dataset (written by `lymphosort data synth`).
DEFAULT_DATA_ROOT = DEFAULT_ROOT
#: teacher_precision -> torch dtype name of the teacher's autocast (None = float32, no autocast).
TEACHER_PRECISIONS: dict[str, str | None] = {"32": None, "bf16": "bfloat16"}

#: Model trained by `lymphosort train` when `--model` is not given.
DEFAULT_TEACHER = "compact-teacher"


@dataclass
class TrainConfig:
    """Everything a training run depends on (besides the data files). A run with a teacher
    is a distillation: `DistillConfig`, whose defaults are the shipped recipe."""

    #: whether a teacher is allowed (a class constant, not a field: DistillConfig sets it)
    takes_teacher: ClassVar[bool] = False
    #: registered model name
    model: str = DEFAULT_TEACHER
    #: extra keyword arguments for `create_model` (must be plain data).
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    #: task view, e.g. t4-vs-b
    task: str = "t4-vs-b"
    #: LymphoMNIST (or LymphoSim) root
    data_root: str = DEFAULT_DATA_ROOT
    #: which fixed train/validation split of the training sessions
    split_version: str = "v1"
    epochs: int = 30
    batch_size: int = 128
    #: peak learning rate (AdamW)
    lr: float = 1e-3
    weight_decay: float = 0.05
    #: fraction of all optimiser steps spent in linear warm-up before the cosine decay.
    warmup_frac: float = 0.05
    #: epochs without improvement of `monitor` before early stopping (0 disables it).
    patience: int = 8
    monitor: str = "val_bacc"
    seed: int = 0
    #: keyword arguments of `data.transforms.AugmentConfig`; None disables augmentation. The
    #: default keeps the relief microscope's lighting direction (no flips or quarter turns);
    #: isotropic optics: flip_p=0.5, rot90=true.
    augment: dict[str, Any] | None = field(default_factory=dict)
    #: draw every class equally often (sampling with replacement, 1/class-count weights).
    balanced: bool = True
    #: cap the training / validation sets (seeded random subset) for quick runs.
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    #: data-loader worker processes
    num_workers: int = 0
    #: Lightning accelerator
    accelerator: str = "auto"
    #: "auto" = 1 process, or the process count torchrun started (LOCAL_WORLD_SIZE).
    devices: int | str = "auto"
    #: "auto" = single process, "ddp" when launched by torchrun with WORLD_SIZE > 1.
    strategy: str = "auto"
    #: Lightning precision, e.g. 32-true, bf16-mixed, 16-mixed
    precision: str = "32-true"
    #: decay of an exponential moving average of the weights (Lightning's EMAWeightAveraging,
    #: updated every step); validation, early stopping, best.ckpt and the saved model then use
    #: the averaged weights, which smooths the epoch-to-epoch swings a session shift causes.
    #: None = off.
    ema_decay: float | None = None
    #: run folder whose trained weights start this run (same model, or the float student of
    #: a QAT model); None = fresh initialisation.
    init_from: str | None = None
    # --- distillation (unused by plain training: method "none", no teacher) ---
    #: run folder of a trained teacher, or None.
    teacher: str | None = None
    #: name in `distill.losses.DISTILL_LOSSES`.
    method: str = "none"
    #: the loss's hyper-parameters (kd: temperature, alpha, mixup_alpha; dkd: alpha, beta,
    #: temperature, ce_weight; at: beta, p, base, temperature, alpha; paper: mixup_alpha)
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    #: dotted module paths hooked for feature losses (None = the loss's automatic choice).
    student_layers: list[str] | None = None
    teacher_layers: list[str] | None = None
    #: arithmetic of the frozen teacher's forward, most of a distillation step: "32" (float32)
    #: or "bf16" (bfloat16 autocast: 1.7x faster teacher forward on an AVX512-BF16 CPU, see
    #: benchmarks/distill_step.py; slow where bf16 is emulated; logits differ by a few
    #: hundredths). The student always trains at `precision`.
    teacher_precision: str = "32"

    def validate(self) -> "TrainConfig":
        from lymphosort.data.info import SPLITS, task_view

        task_view(self.task)
        if self.teacher is not None and not self.takes_teacher:
            raise ConfigError("a teacher makes this run a distillation: use DistillConfig (its defaults are the "
                              "shipped recipe, as `lymphosort distill`), not TrainConfig")
        if self.split_version not in SPLITS:
            raise ConfigError(f"unknown split version {self.split_version!r}; choose one of {', '.join(SPLITS)}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ConfigError(f"warmup_frac must be in [0, 1), got {self.warmup_frac!r}")
        if self.ema_decay is not None and not 0.0 < float(self.ema_decay) < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1) or unset, got {self.ema_decay!r}")
        if self.teacher_precision not in TEACHER_PRECISIONS:
            raise ConfigError(
                f"teacher_precision must be one of {', '.join(TEACHER_PRECISIONS)}, got {self.teacher_precision!r}"
            )
        if self.monitor not in ("val_bacc", "val_acc", "val_loss"):
            raise ConfigError(f"monitor must be val_bacc, val_acc or val_loss, got {self.monitor!r}")
        for name in ("max_train_samples", "max_val_samples"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ConfigError(f"{name} must be >= 1 or unset, got {v!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        return _config.config_from_mapping(cls, data)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with `changes` applied; None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


#: each method's shipped hyper-parameters (others: the loss's own defaults)
SHIPPED_METHOD_KWARGS: Mapping[str, Mapping[str, Any]] = {"kd": {"temperature": 2.0, "alpha": 0.5}}


@dataclass
class DistillConfig(TrainConfig):
    """`lymphosort distill`: a student trained against a frozen teacher. The defaults ARE the
    documented best setting. Student tiny-32-whole, the whole crop shrunk to 32x32 (LymphoSim 3.0,
    simulated, t4-vs-b, same 8-epoch kd from the compact teacher, seed 0: 88.09% against
    84.27% for tiny-32-centre's centred 32x32 window, which on this microscope sees only the inside
    of the cell). kd at temperature 2 with half the weight on the labels and 60 epochs with
    the best validation checkpoint kept were chosen on LymphoSim 2.1 (three seeds against dkd,
    labels only and the reference recipe)."""

    takes_teacher: ClassVar[bool] = True
    #: registered student model
    model: str = "tiny-32-whole"
    epochs: int = 60
    #: epochs without improvement before early stopping (0: all epochs, the best kept)
    patience: int = 0
    #: name in `distill.losses.DISTILL_LOSSES`: kd, dkd, at, none (labels only), paper (the
    #: reference recipe)
    method: str = "kd"
    #: the loss's hyper-parameters (kd: temperature, alpha, mixup_alpha; dkd: alpha, beta,
    #: temperature, ce_weight; at: beta, p, base, temperature, alpha; paper: mixup_alpha);
    #: none: the method's shipped ones (kd: temperature 2, alpha 0.5; others: the loss's defaults)
    method_kwargs: dict[str, Any] | None = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.method_kwargs is None:
            self.method_kwargs = dict(SHIPPED_METHOD_KWARGS.get(self.method, {}))

    @classmethod
    def teacher_defaults(cls, teacher: str | Path) -> dict[str, Any]:
        """What a distillation takes from its teacher's model card unless told otherwise: the
        task and the data root it was trained on."""
        from lymphosort.models.checkpoint import read_card

        card = read_card(teacher)
        out: dict[str, Any] = {"teacher": str(teacher), "task": card.task}
        if card.config.get("data_root"):
            out["data_root"] = card.config["data_root"]
        return out

    @classmethod
    def for_teacher(cls, teacher: str | Path, **changes: Any) -> "DistillConfig":
        """The shipped recipe for `teacher` (its task and data root) with `changes`: the Python
        twin of `lymphosort distill --teacher RUN`."""
        data = {**cls.teacher_defaults(teacher), **changes}
        return _config.config_from_mapping(cls, data).validate()

    def validate(self) -> "DistillConfig":
        if not self.teacher:
            raise ConfigError("distillation needs a teacher: the run folder of a trained model (--teacher RUN)")
        super().validate()
        return self


def config_class(data: Mapping[str, Any]) -> type[TrainConfig]:
    """The config class of a saved run's config mapping (a teacher makes it a distillation)."""
    return DistillConfig if data.get("teacher") else TrainConfig


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write `cfg` as YAML (or JSON when the suffix is .json)."""
    return _config.save_config(cfg, path)


def load_config(path: str | Path) -> TrainConfig:
    """Read a run's YAML/JSON config (safe loaders only: a config never executes code)."""
    data = _config.load_mapping(path)
    return _config.config_from_mapping(config_class(data), data)

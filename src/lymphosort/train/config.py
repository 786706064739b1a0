"""The training configuration: one dataclass, saved resolved to every run folder.

Configs are plain data (YAML read with `yaml.safe_load`, or JSON): nothing in them is
executed, so a run folder can be shared and re-read safely.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

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
    """Everything a training or distillation run depends on (besides the data files)."""

    model: str = DEFAULT_TEACHER
    #: extra keyword arguments for `create_model` (must be plain data).
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    task: str = "t4-vs-b"
    data_root: str = DEFAULT_DATA_ROOT
    split_version: str = "v1"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    #: fraction of all optimiser steps spent in linear warm-up before the cosine decay.
    warmup_frac: float = 0.05
    #: epochs without improvement of `monitor` before early stopping (0 disables it).
    patience: int = 8
    monitor: str = "val_bacc"
    seed: int = 0
    #: keyword arguments of `data.transforms.AugmentConfig`; None disables augmentation.
    augment: dict[str, Any] | None = field(default_factory=dict)
    #: draw every class equally often (sampling with replacement, 1/class-count weights).
    balanced: bool = True
    #: cap the training / validation sets (seeded random subset) for quick runs.
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    num_workers: int = 0
    accelerator: str = "auto"
    #: "auto" = 1 process, or the process count torchrun started (LOCAL_WORLD_SIZE).
    devices: int | str = "auto"
    #: "auto" = single process, "ddp" when launched by torchrun with WORLD_SIZE > 1.
    strategy: str = "auto"
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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with `changes` applied; None values are ignored (unset CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write `cfg` as YAML (or JSON when the suffix is .json)."""
    from lymphosort.atomic import write_text_atomic

    path = Path(path)
    data = cfg.to_dict()
    if path.suffix == ".json":
        return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    import yaml

    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=True))


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML/JSON config (safe loaders only: a config never executes code)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values")
    return TrainConfig.from_dict(data)

"""The Lightning Trainer of a run folder: atomic checkpoints, last.ckpt every epoch, the run log."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lymphosort.train.callbacks import HistoryCallback
from lymphosort.train.config import TrainConfig

log = logging.getLogger(__name__)

#: Checkpoints of a run folder (besides model.safetensors/model.json): last.ckpt after every
#: epoch (resume), best.ckpt at the best validation epoch.
LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"

#: Files of a run folder written here (besides model.safetensors/model.json).


def setup_run_logging(run_dir: Path, quiet: bool) -> logging.Handler | None:
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


def json_default(o: Any) -> Any:
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


def make_trainer(
    cfg: TrainConfig, run_dir: Path, quiet: bool, n_train: int, extra: Sequence[L.Callback] = ()
) -> L.Trainer:
    from lightning.pytorch.callbacks import (
        EarlyStopping,
        LearningRateMonitor,
        ModelCheckpoint,
    )
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

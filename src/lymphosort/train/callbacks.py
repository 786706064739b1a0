"""Lightning callbacks and the learning-rate schedule used by `train.fit`."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch

#: Columns of `history.json` / `metrics.csv`, one row per epoch.
log = logging.getLogger(__name__)

HISTORY_KEYS: tuple[str, ...] = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_bacc", "lr")


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine decay to `min_ratio`.

    Returned as a closure (not a callable object) on purpose: LambdaLR stores the
    __dict__ of callable objects in its state, which would pin the old step count when a
    run is resumed with more epochs.
    """
    warmup_steps = max(0, int(warmup_steps))
    total_steps = max(1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _scalar(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().item()
    value = float(value)
    return value if math.isfinite(value) else None


class HistoryCallback(L.Callback):
    """Per-epoch train/val loss and accuracy, written to RUN/history.json and RUN/metrics.csv.

    The history is part of the callback's checkpoint state, so a resumed run continues
    the same file instead of starting over. Only global rank 0 writes.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.history: list[dict[str, float | int | None]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Since Lightning 2.0 this runs after the epoch's validation, so val metrics are in.
        m = trainer.callback_metrics
        row: dict[str, float | int | None] = {"epoch": int(trainer.current_epoch) + 1}
        row["train_loss"] = _scalar(m.get("train_loss_epoch", m.get("train_loss")))
        row["train_acc"] = _scalar(m.get("train_acc"))
        for k in ("val_loss", "val_acc", "val_bacc"):
            row[k] = _scalar(m.get(k))
        opt = trainer.optimizers[0] if trainer.optimizers else None
        row["lr"] = float(opt.param_groups[0]["lr"]) if opt is not None else None
        # A resumed epoch replaces a row written before an interruption.
        self.history = [h for h in self.history if h["epoch"] != row["epoch"]] + [row]
        if trainer.is_global_zero:
            self.write()
            # One line per epoch, so long runs show progress even without a progress bar.
            log.info(
                "epoch %d/%d: %s",
                row["epoch"],
                trainer.max_epochs,
                ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and v is not None),
            )

    def write(self) -> None:
        from lymphosort.atomic import atomic_write, write_json_atomic

        write_json_atomic(self.run_dir / "history.json", self.history, indent=1)

        def write_csv(path: Path) -> None:
            with open(path, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(HISTORY_KEYS))
                w.writeheader()
                for row in self.history:
                    w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_KEYS})

        atomic_write(self.run_dir / "metrics.csv", write_csv)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(h) for h in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]


def plot_history(history: list[dict[str, Any]], path: str | Path, title: str = "Training") -> Path | None:
    """Loss and accuracy curves (train vs val) as a PNG; None when there is nothing to plot."""
    from lymphosort.evaluate.plots import plot_training_curves

    keys = [k for k in HISTORY_KEYS if k not in ("epoch", "lr")]
    rows = [{k: v for k, v in h.items() if v is not None and (k == "epoch" or k in keys)} for h in history]
    if not any(len(r) > 1 for r in rows):
        return None
    return plot_training_curves(rows, path, keys=[k for k in keys if any(k in r for r in rows)], title=title)

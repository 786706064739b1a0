"""Evaluate one run folder: `predict_proba` and `evaluate_run`, the core that `lymphosort
evaluate` (evaluate/cli.py), training, transfer and the pipeline call.

A 2-class model evaluated on another 2-class task reads its class 1 as that task's class 1
(a t4-vs-b model on t8-vs-b: "T" is read as T8, which the task view already maps to 1).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

from lymphosort.data.info import DEFAULT_ROOT

__all__ = ["DEFAULT_DATA_ROOT", "evaluate_run", "predict_proba", "resolve_data_root"]

log = logging.getLogger(__name__)

DEFAULT_DATA_ROOT = Path(DEFAULT_ROOT)
LATENCY_BATCHES = (1, 256)


def predict_proba(model: Any, images: Any, *, batch_size: int = 256, device: str | None = None) -> Any:
    """Softmax probabilities float64 [N, C] (numpy) for uint8 images [N, 64, 64].

    Each batch is converted with the model's own spec (`ModelSpec.prepare`); `device`
    defaults to the model's.
    """
    import numpy as np
    import torch

    spec = model.spec
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = spec.prepare(images[start : start + batch_size].to(dev))
            out.append(torch.softmax(model(x).double(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, spec.num_classes))


def resolve_data_root(run_dir: str | os.PathLike[str], data_root: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """(data root, where it came from): `data_root` when given, else the one the run's model
    card records, else the default root."""
    from lymphosort.models.checkpoint import CARD_FILE, read_card

    if data_root is not None:
        return Path(data_root), "given"
    recorded = read_card(run_dir).data_root
    if recorded:
        return Path(recorded), f"recorded in {Path(run_dir) / CARD_FILE}"
    return DEFAULT_DATA_ROOT, f"the default: {Path(run_dir) / CARD_FILE} records no data root"


# long by design: predict, score, plot and record one run: the order of the files it writes
def evaluate_run(
    run_dir: str | os.PathLike[str],
    task: str,
    data_root: str | os.PathLike[str] | None,
    split: str = "test",
    out: str | os.PathLike[str] | None = None,
    *,
    split_version: str = "v1",
    batch_size: int = 256,
    device: str = "cpu",
    n_boot: int = 1000,
    seed: int = 0,
    latency: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Evaluate the checkpoint in `run_dir` on `split` of `task`; write results to `out`.

    `data_root` None: the root the run was trained on (`resolve_data_root`). `out` defaults
    to `RUN/eval/TASK-SPLIT`. Writes `metrics.json` (task, data provenance and split id, n,
    accuracy, balanced_accuracy, f1, roc_auc, ece, confusion, intervals, params, macs,
    cpu_latency_ms per batch size), `predictions.npz` (probs, labels, row indices) and
    roc.png, confusion.png, reliability.png, each atomically. Returns the metrics dict.
    """
    import numpy as np

    from lymphosort.data.info import task_view
    from lymphosort.data.lymphomnist import load_split
    from lymphosort.errors import ConfigError
    from lymphosort.evaluate.efficiency import count_macs, count_params, measure_latency
    from lymphosort.evaluate.metrics import classification_metrics
    from lymphosort.evaluate.plots import plot_confusion, plot_reliability, plot_roc
    from lymphosort.atomic import atomic_write, write_json_atomic
    from lymphosort.models.checkpoint import jsonable, load_checkpoint

    view = task_view(task)
    data_root, _ = resolve_data_root(run_dir, data_root)
    model, card = load_checkpoint(run_dir, map_location=device)
    if model.spec.num_classes != view.num_classes:
        raise ConfigError(
            f"model {card.model!r} has {model.spec.num_classes} outputs but task {task!r} has "
            f"{view.num_classes} classes ({', '.join(view.classes)})"
        )
    if card.task and card.task != task:
        log.info("model trained on %s, evaluated on %s: its class i is read as %s", card.task, task, view.classes)
    data = load_split(data_root, split, task, split_version)
    probs = predict_proba(model, data.images, batch_size=batch_size, device=device)
    labels = data.labels.numpy()
    metrics = classification_metrics(labels, probs, n_boot=n_boot, seed=seed, class_names=list(view.classes))

    result: dict[str, Any] = {
        "run": str(run_dir),
        "model": card.model,
        "model_task": card.task,
        "model_classes": list(card.classes),
        "task": task,
        "classes": list(view.classes),
        "split": split,
        "data": {**dict(data.provenance), "split": split, "split_id": data.split_id, "root": str(data_root)},
        **metrics,
        "params": count_params(model),
        "macs": count_macs(model),
        "input_size": model.spec.input_size,
    }
    if latency:
        cpu_model = copy.deepcopy(model).cpu() if device != "cpu" else model
        lat = measure_latency({card.model: cpu_model}, LATENCY_BATCHES, threads=threads, warmup=3, repeats=10)
        per_batch = lat["models"][card.model]
        result["cpu_latency_ms"] = {str(bs): per_batch[bs]["median_ms"] for bs in LATENCY_BATCHES}
        result["latency"] = {k: v for k, v in lat.items() if k != "models"}

    out_dir = Path(out) if out is not None else Path(run_dir) / "eval" / f"{task}-{split}"
    np_probs = probs.astype(np.float32)
    atomic_write(out_dir / "predictions.npz",
                 lambda tmp: np.savez_compressed(tmp, probs=np_probs, labels=labels, indices=data.indices.numpy()))
    names = list(view.classes)
    plot_roc(labels, probs, out_dir / "roc.png", names, title=f"{card.model} on {task} ({split})")
    plot_confusion(metrics["confusion"], out_dir / "confusion.png", names)
    plot_reliability(labels, probs, out_dir / "reliability.png")
    # Last: metrics.json is what later runs and reports read.
    write_json_atomic(out_dir / "metrics.json", jsonable(result), allow_nan=False)
    result["out"] = str(out_dir)
    return result

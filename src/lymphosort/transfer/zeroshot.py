"""Zero-shot transfer: a model trained on one task evaluated on another, untouched.

The usual case is a T4-vs-B model on T8 vs B: the task view `t8-vs-b` maps on-disk T8 to
label 1, which is the model's "T" output, so the model's class i is read by name as the
task's class i (`check_readable`). On top of the `evaluate` report (same `metrics.json`,
written by `evaluate_run`) this adds what a lab needs before trusting a transferred
model: an operating point chosen on validation (never on test) and calibration before
and after temperature scaling fitted on validation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lymphosort.errors import ConfigError

__all__ = [
    "ZeroShotConfig",
    "apply_threshold",
    "check_readable",
    "fit_temperature",
    "nll",
    "sweep_threshold",
    "temperature_report",
    "threshold_report",
    "zero_shot",
]

log = logging.getLogger(__name__)

#: Thresholds reported in the sweep curve (the chosen one is searched over all val scores).
SWEEP_GRID = np.round(np.linspace(0.0, 1.0, 101), 4)


def check_readable(model_classes: Sequence[str], task_classes: Sequence[str]) -> None:
    """Refuse a zero-shot reading that is not by name: model class i must be task class i."""
    if tuple(model_classes) != tuple(task_classes):
        raise ConfigError(
            f"the model's classes {tuple(model_classes)} cannot be read as the task's {tuple(task_classes)} "
            "without training; use `lymphosort transfer finetune` (it resets the head)"
        )


# --------------------------------------------------------------------------- operating point


def _bacc(y: np.ndarray, pred: np.ndarray) -> float:
    recalls = [float(np.mean(pred[y == c] == c)) for c in np.unique(y)]
    return float(np.mean(recalls)) if recalls else float("nan")


def sweep_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """Threshold on P(class 1) maximising balanced accuracy (ties: the one nearest 0.5).

    Candidates are the midpoints between sorted distinct scores (plus 0.5), so the choice
    is exact on this set rather than limited to a grid.
    """
    y = np.asarray(y).astype(int)
    s = np.unique(np.asarray(score, dtype=np.float64))
    cands = np.concatenate([[0.5], (s[1:] + s[:-1]) / 2 if len(s) > 1 else []])
    # Vectorised balanced accuracy for every candidate: sort once, count with searchsorted.
    pos, neg = np.sort(score[y == 1]), np.sort(score[y == 0])
    if len(pos) == 0 or len(neg) == 0:
        return 0.5
    tpr = 1.0 - np.searchsorted(pos, cands, side="left") / len(pos)  # score >= t -> class 1
    tnr = np.searchsorted(neg, cands, side="left") / len(neg)
    bacc = (tpr + tnr) / 2
    best = np.flatnonzero(bacc >= bacc.max() - 1e-12)
    return float(cands[best[np.argmin(np.abs(cands[best] - 0.5))]])


def apply_threshold(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Binary probabilities shifted so that argmax decides `P(1) >= threshold`.

    A monotone log-odds shift: ranks (ROC-AUC) are unchanged, so `classification_metrics`
    gives the metrics (and intervals) of that operating point.
    """
    p1 = np.clip(np.asarray(probs, dtype=np.float64)[:, 1], 1e-12, 1 - 1e-12)
    t = float(np.clip(threshold, 1e-12, 1 - 1e-12))
    z = np.log(p1 / (1 - p1)) - np.log(t / (1 - t))
    q1 = 1.0 / (1.0 + np.exp(-z))
    q1 = np.where(p1 >= t, np.maximum(q1, 0.5), np.minimum(q1, 0.5 - 1e-12))  # ties go to class 1
    return np.stack([1 - q1, q1], axis=1)


def threshold_report(
    y_val: np.ndarray, p_val: np.ndarray, y_test: np.ndarray, p_test: np.ndarray, class_names: Sequence[str], n_boot: int
) -> dict[str, Any]:
    """Operating point chosen on val (max balanced accuracy), reported on test with intervals."""
    from lymphosort.evaluate.metrics import classification_metrics

    t = sweep_threshold(y_val, p_val[:, 1])
    at = classification_metrics(y_test, apply_threshold(p_test, t), n_boot=n_boot, class_names=list(class_names))
    keep = ("accuracy", "balanced_accuracy", "f1", "confusion", "intervals")
    curve = [
        {
            "threshold": float(g),
            "val_balanced_accuracy": _bacc(y_val, (p_val[:, 1] >= g).astype(int)),
            "test_balanced_accuracy": _bacc(y_test, (p_test[:, 1] >= g).astype(int)),
            "test_accuracy": float(np.mean((p_test[:, 1] >= g).astype(int) == y_test)),
        }
        for g in SWEEP_GRID
    ]
    return {
        "chosen_on": "val",
        "criterion": "max balanced accuracy",
        "threshold": t,
        "val_balanced_accuracy": _bacc(y_val, (p_val[:, 1] >= t).astype(int)),
        "test": {k: at[k] for k in keep if k in at},
        "sweep": curve,
    }


# --------------------------------------------------------------------------- calibration


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `y` under softmax(logits / T)."""
    lp = _log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-np.mean(lp[np.arange(len(y)), np.asarray(y).astype(int)]))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising validation NLL (1-D bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda lt: nll(logits, y, float(np.exp(lt))), bounds=(-4.0, 4.0), method="bounded")
    return float(np.exp(res.x))


def temperature_report(
    logits_val: np.ndarray, y_val: np.ndarray, logits_test: np.ndarray, y_test: np.ndarray
) -> dict[str, Any]:
    """T fitted on val by NLL; ECE and NLL on test before and after."""
    from lymphosort.evaluate.metrics import expected_calibration_error

    t = fit_temperature(logits_val, y_val)

    def probs(z: np.ndarray, temp: float) -> np.ndarray:
        return np.exp(_log_softmax(np.asarray(z, dtype=np.float64) / temp))

    return {
        "fitted_on": "val",
        "temperature": t,
        "val_nll": {"before": nll(logits_val, y_val), "after": nll(logits_val, y_val, t)},
        "test_nll": {"before": nll(logits_test, y_test), "after": nll(logits_test, y_test, t)},
        "test_ece": {
            "before": expected_calibration_error(y_test, probs(logits_test, 1.0)),
            "after": expected_calibration_error(y_test, probs(logits_test, t)),
        },
    }


def logits_from_probs(probs: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant (all softmax needs), from float64 probabilities."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None))


# --------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class ZeroShotConfig:
    """`lymphosort transfer zero-shot`: a run evaluated on another task, untrained."""

    #: the task to evaluate on (the mission's: T8 vs B from a T4-vs-B model)
    task: str = "t8-vs-b"
    #: LymphoMNIST (or LymphoSim) root (none: the one the run was trained on, from its model
    #: card, else the default root)
    data_root: str | None = None
    split_version: str = "v1"
    #: bootstrap resamples for the 95% intervals
    n_boot: int = 1000
    #: also time the model (batch 1 and 256, CPU)
    latency: bool = True

    def validate(self) -> "ZeroShotConfig":
        from lymphosort.data.info import task_view

        task_view(self.task)  # a clear error naming the tasks
        return self


def zero_shot(run_dir: str | os.PathLike[str], cfg: ZeroShotConfig = ZeroShotConfig(),
              out: str | os.PathLike[str] | None = None, *, device: str = "cpu") -> dict[str, Any]:
    """Evaluate `run_dir` on `cfg.task` without training; write `OUT/metrics.json` and plots.

    `out` defaults to `RUN/zero-shot/TASK`. The metrics are `evaluate_run`'s on test, plus
    `zero_shot`: source task, `operating_point` (threshold from val), `calibration`
    (temperature from val) and the config.
    """
    from lymphosort.config import to_mapping

    task, data_root, split_version, n_boot, latency = cfg.task, cfg.data_root, cfg.split_version, cfg.n_boot, cfg.latency
    from lymphosort.data.info import task_view
    from lymphosort.data.lymphomnist import load_split
    from lymphosort.evaluate.run import evaluate_run, predict_proba, resolve_data_root
    from lymphosort.models.checkpoint import jsonable, load_checkpoint

    data_root, source = resolve_data_root(run_dir, data_root)
    log.info("zero-shot on %s (data root %s)", data_root, source)
    view = task_view(task)
    model, card = load_checkpoint(run_dir, map_location=device)
    check_readable(card.classes or view.classes, view.classes)
    out_dir = Path(out) if out is not None else Path(run_dir) / "zero-shot" / task
    result = evaluate_run(
        run_dir, task, data_root, "test", out_dir,
        split_version=split_version, n_boot=n_boot, latency=latency, device=device,
    )
    val = load_split(data_root, "val", task, split_version)
    test = load_split(data_root, "test", task, split_version)
    p_val, y_val = predict_proba(model, val.images, device=device), val.labels.numpy()
    # float64 test probabilities for the calibration fit (predictions.npz holds float32).
    p_test, y_test = predict_proba(model, test.images, device=device), test.labels.numpy()

    extra: dict[str, Any] = {"source_task": card.task, "source_run": str(run_dir), "n_val": int(len(y_val)),
                             "config": {**to_mapping(cfg), "data_root": str(data_root)}}
    if view.num_classes == 2:
        extra["operating_point"] = threshold_report(y_val, p_val, y_test, p_test, view.classes, n_boot)
    extra["calibration"] = temperature_report(logits_from_probs(p_val), y_val, logits_from_probs(p_test), y_test)
    result["zero_shot"] = extra
    written = {k: v for k, v in result.items() if k != "out"}
    from lymphosort.atomic import write_json_atomic

    write_json_atomic(out_dir / "metrics.json", jsonable(written), allow_nan=False)
    _plot_sweep(extra.get("operating_point"), out_dir / "threshold.png")
    return result


def _plot_sweep(op: dict[str, Any] | None, path: Path) -> None:
    if not op:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["threshold"] for r in op["sweep"]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(t, [r["val_balanced_accuracy"] for r in op["sweep"]], label="val")
    ax.plot(t, [r["test_balanced_accuracy"] for r in op["sweep"]], label="test", alpha=0.7)
    ax.axvline(op["threshold"], color="k", ls="--", lw=1, label=f"chosen on val ({op['threshold']:.3f})")
    ax.set_xlabel("threshold on P(class 1)")
    ax.set_ylabel("balanced accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from lymphosort.atomic import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)

"""Confound audit: does a trained model read the cell, or the background around it?

Real labs record each class in its own sessions, so illumination, noise, walls and debris
can name the class as well as the cell does. Two measurements on a split's crops:

* **Blanked accuracy**: the model's accuracy when every pixel outside the (dilated) cell
  mask, the *background ring*, is replaced by one global constant (``global``): the median
  ring grey level of the whole audited set, the same for every crop, with the cell left as
  it is. A per-crop constant (the crop's own ring median) would keep each crop's
  background level, which is exactly what a session confound changes, so it could not
  reveal a level shortcut. Two diagnostics are reported beside it, not used by the
  verdict: ``own-median`` (ring = the crop's ring median: only ring *structure* removed)
  and ``level-matched`` (global ring, and the cell shifted by the same amount as its
  background: removes the crop's illumination level from the cell too, so it also exposes
  a model that reads the level through the cell; it penalises a model that reads absolute
  cell grey levels, hence diagnostic only).
* **Ring-only classifier**: a fixed feature set computed from ring pixels only (grey-level
  statistics, noise, gradient and texture summaries, illumination tilt; never the ring's
  area, which is the cell's size), a scikit-learn gradient-boosted classifier, stratified
  5-fold cross-validation. Above chance means the background alone predicts the class.

The verdict flags the run when either exceeds a named threshold (see ``THRESHOLDS``).
Cell masks, the blanking and the ring features live in ``lymphosort.evaluate.masks``; a
centred disc stands in when a crop does not segment, and the audit reports how often.
"""

# a little over 400 lines: the audit's checks, thresholds and verdict texts stay together
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lymphosort.errors import AuditError
from lymphosort.evaluate.masks import (
    BLANK_MODES,
    DILATE_PX,
    EDGE_MADS,
    RING_FEATURES,
    blank_ring,
    cell_masks,
    check_images,
    ring_features,
)

# AuditError and the cell-mask / ring names are re-exported (from errors, evaluate.masks)
__all__ = [
    "AuditError",
    "BLANK_DROP_POINTS",
    "DILATE_PX",
    "RING_BACC_MARGIN",
    "RING_FEATURES",
    "THRESHOLDS",
    "audit_images",
    "audit_run",
    "BLANK_MODES",
    "blank_ring",
    "cell_masks",
    "ring_features",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# --- verdict thresholds -------------------------------------------------------------------
#: Ring-only balanced accuracy must beat chance (1/K) by this much at the lower end of its
#: 95% interval to flag. Ring pixels are never perfectly free of the cell (blur and halo
#: beyond the dilation, neighbours at the corners, a cell's size moving the ring's inner
#: edge), so a faint legitimate signal is expected: on unconfounded LymphoSim 3.0 the ring
#: gives 0.54 [0.51, 0.56] on t4-vs-b (1,372 test crops) and 0.35 [0.32, 0.37] on 3 classes
#: (2,000 crops); the `confounded` preset gives 0.99 and 0.92. 10 points sits between.
RING_BACC_MARGIN = 0.10
#: Accuracy may fall by at most this many points when the ring is blanked (and the paired
#: interval must exclude 0 to flag). Blanking is itself a change of input: on LymphoSim
#: 3.0, whose background level varies from crop to crop (sd 16 grey levels), a global
#: background puts the cell on a background up to ~30 levels off its own, which cost a
#: cell-reading tiny-32 (t4-vs-b, 1,372 test crops) 4.8 points [3.4, 6.3]. Twice that
#: artefact is the bar; a model leaning on the background falls tens of points, to chance.
BLANK_DROP_POINTS = 10.0
THRESHOLDS: Mapping[str, float] = {"ring_bacc_margin": RING_BACC_MARGIN, "blank_drop_points": BLANK_DROP_POINTS}

# --- ring classifier ----------------------------------------------------------------------
CV_FOLDS = 5
DEFAULT_N_MAX = 2000  #: audited crops (stratified subsample): intervals of ~ +-2 points
N_BOOT = 1000
_PANEL_COLUMNS = 8
NOT_FLAGGED = "no sign that the model reads the background instead of the cell"



def _ring_classifier(features: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Any]:
    """Cross-validated ring-only classifier: out-of-fold probabilities -> metrics with intervals."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from lymphosort.evaluate.metrics import classification_metrics

    present, y = np.unique(labels, return_inverse=True)
    # Gradient boosting: a session confound need not be monotone in any one feature (a class
    # recorded in the darkest and the brightest sessions); shallow trees and an L2 penalty
    # keep it from memorising a few hundred crops.
    clf = HistGradientBoostingClassifier(
        max_iter=150, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20, l2_regularization=1.0,
        random_state=seed,
    )
    cv = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed)
    probs = cross_val_predict(clf, features, y, cv=cv, method="predict_proba")
    m = classification_metrics(y, probs, n_boot=N_BOOT, seed=seed)
    counts = np.bincount(y)
    return {
        "features": list(RING_FEATURES),
        "classifier": "HistGradientBoostingClassifier(max_iter=150, max_leaf_nodes=15, min_samples_leaf=20, "
        "l2_regularization=1.0)",
        "cv": f"stratified {CV_FOLDS}-fold, shuffled, random_state={seed}",
        "classes_present": present.tolist(),
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "roc_auc": m["roc_auc"],
        "intervals": {k: m["intervals"][k] for k in ("accuracy", "balanced_accuracy", "roc_auc")},
        "chance_accuracy": float(counts.max() / counts.sum()),
        "chance_balanced_accuracy": 1.0 / len(present),
    }


def _acc(labels: np.ndarray, probs: np.ndarray, seed: int) -> dict[str, Any]:
    from lymphosort.evaluate.metrics import classification_metrics

    m = classification_metrics(labels, probs, n_boot=N_BOOT, seed=seed)
    return {
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "intervals": {k: m["intervals"][k] for k in ("accuracy", "balanced_accuracy")},
    }


# long by design: the audit's measurements in the order the report lists them
def audit_images(
    images: np.ndarray,
    labels: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    *,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The audit on given crops: (results dict, arrays {masks, fallback, blanked} for figures).

    `predict` maps uint8 crops [N, H, W] to class probabilities [N, C]; `labels` are the
    model's class indices. Needs at least two classes with CV_FOLDS crops each.
    """
    from lymphosort.evaluate.metrics import paired_accuracy_difference

    imgs = check_images(images)
    y = np.asarray(labels, dtype=np.int64).ravel()
    if y.shape[0] != imgs.shape[0]:
        raise AuditError(f"{imgs.shape[0]} images but {y.shape[0]} labels")
    present, counts = np.unique(y, return_counts=True)
    if len(present) < 2 or counts.min() < CV_FOLDS:
        have = ", ".join(f"class {c}: {k}" for c, k in zip(present.tolist(), counts.tolist())) or "none"
        raise AuditError(
            f"the audit needs at least 2 classes with >= {CV_FOLDS} images each "
            f"(for {CV_FOLDS}-fold cross-validation); got {len(y)} image(s) ({have})"
        )

    masks, fallback, radius = cell_masks(imgs)
    if fallback.mean() > 0.2:
        log.warning("cell segmentation failed on %.0f%% of crops; they use a centred disc of radius %.1f px",
                    100 * fallback.mean(), radius)
    probs = predict(imgs)
    if probs.ndim != 2 or probs.shape[0] != len(y) or y.max() >= probs.shape[1]:
        raise AuditError(f"predictions of shape {probs.shape} do not fit {len(y)} labels up to {y.max()}")
    as_is = _acc(y, probs, seed)
    variants: dict[str, dict[str, Any]] = {}
    for mode in BLANK_MODES:
        x, constant = blank_ring(imgs, masks, mode)
        p = predict(x)
        variants[mode] = _acc(y, p, seed)
        if mode == BLANK_MODES[0]:
            blanked, p_blank, blank_constant = x, p, constant
    diff = paired_accuracy_difference(y, [probs.argmax(1)], [p_blank.argmax(1)], n_boot=N_BOOT, seed=seed)
    ring = _ring_classifier(ring_features(imgs, masks), y, seed)

    drop_pts = 100.0 * diff["difference"]
    drop_low = 100.0 * diff["interval"][0]
    ring_low = ring["intervals"]["balanced_accuracy"][0]
    ring_bar = ring["chance_balanced_accuracy"] + RING_BACC_MARGIN
    reasons = []
    if ring_low > ring_bar:
        reasons.append(
            f"the background ring alone predicts the class: balanced accuracy {ring['balanced_accuracy']:.3f} "
            f"(95% low {ring_low:.3f} > chance {ring['chance_balanced_accuracy']:.3f} + {RING_BACC_MARGIN:.2f})"
        )
    if drop_pts > BLANK_DROP_POINTS and drop_low > 0:
        reasons.append(
            f"accuracy falls {drop_pts:.1f} points (95% [{drop_low:.1f}, {100 * diff['interval'][1]:.1f}]) when "
            f"the ring is blanked (> {BLANK_DROP_POINTS:g})"
        )
    cell_frac = masks.reshape(len(imgs), -1).mean(1)
    result: dict[str, Any] = {
        "flagged": bool(reasons),
        "reasons": reasons,
        "n": int(len(y)),
        "support": {int(c): int(k) for c, k in zip(present, counts)},
        "thresholds": dict(THRESHOLDS),
        "accuracy": {
            "as_is": as_is,
            "blanked": variants[BLANK_MODES[0]],
            "drop_points": drop_pts,
            "drop_interval_points": [100.0 * v for v in diff["interval"]],
            "blanked_variants": variants,
        },
        "ring_only": ring,
        "mask": {
            "method": "smoothed gradient magnitude | deviation from border level > "
            f"{EDGE_MADS:g} robust SD, centre component, convex hull + fitted circle, dilated {DILATE_PX} px",
            "fallback_count": int(fallback.sum()),
            "fallback_fraction": float(fallback.mean()),
            "fallback_radius_px": radius,
            "cell_fraction_median": float(np.median(cell_frac)),
            "ring_fraction_median": float(np.median(1.0 - cell_frac)),
        },
        "blanking": {
            "mode": BLANK_MODES[0],
            "constant": blank_constant,
            "why": "one constant (median ring grey level of the audited set) for every crop, so no crop keeps its "
            "own (possibly session-specific) background level; the cell is left as it is",
        },
    }
    return result, {"masks": masks, "fallback": fallback, "blanked": blanked}


# --- data ---------------------------------------------------------------------------------


def _folder_data(folder: PathLike, classes: Sequence[str], task: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Lab folder -> (images, labels in the run's classes, provenance).

    Subfolders named after the run's classes are read as such, unless some are named after
    on-disk classes the run does not use (T4, T8 for a B/T run): then the on-disk names are
    read and mapped by the task view (t4-vs-b: T4 -> T, T8 dropped).
    """
    from lymphosort.data.folder import load_folder
    from lymphosort.data.info import CLASSES, task_view
    from lymphosort.data.lymphomnist import task_labels
    from lymphosort.errors import DatasetNotFoundError

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder not found: {root}")
    subdirs = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    # On-disk names the run does not use (T4, T8 for a B/T model) mean: map through the task.
    on_disk_only = subdirs & (set(CLASSES) - set(classes))
    if subdirs & set(classes) and not on_disk_only:
        data = load_folder(root, classes=list(classes), progress=False)
        return data.images.numpy(), data.labels.numpy(), dict(data.provenance)
    if subdirs & set(CLASSES):
        data = load_folder(root, classes=list(CLASSES), progress=False)
        keep, mapped = task_labels(data.labels.numpy(), task_view(task))
        return data.images.numpy()[keep], mapped, {**data.provenance, "mapped_by_task": task}
    raise AuditError(
        f"{root}: no class subfolder named after the run's classes ({', '.join(classes)}) or the "
        f"LymphoMNIST classes ({', '.join(CLASSES)}); found: {', '.join(sorted(subdirs)) or 'none'}"
    )


def _subsample(labels: np.ndarray, n_max: int, seed: int) -> np.ndarray:
    """Row indices: all, or a stratified random n_max of them (sorted)."""
    if n_max < 1:
        raise AuditError(f"n_max must be >= 1, got {n_max}")
    if len(labels) <= n_max:
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    try:
        rows, _ = train_test_split(np.arange(len(labels)), train_size=n_max, stratify=labels, random_state=seed)
    except ValueError:  # a class too small to stratify: plain random rows
        rows = np.random.default_rng(seed).choice(len(labels), n_max, replace=False)
    return np.sort(rows)


def audit_run(
    run_dir: PathLike,
    data_root: PathLike | None,
    *,
    task: str | None = None,
    split: str = "test",
    out: PathLike | None = None,
    n_max: int = DEFAULT_N_MAX,
    seed: int = 0,
    data_folder: PathLike | None = None,
    split_version: str = "v1",
    device: str = "cpu",
) -> dict[str, Any]:
    """Confound audit of the run in `run_dir` on `split` of an IDX root, or on a lab folder.

    `task` defaults to the run's own (model.json). With `data_folder` (class subfolders) the
    folder is audited instead of `data_root` (images of other sizes resized to 64x64 as
    `load_folder` does). At most `n_max` crops (stratified, `seed`).
    Writes `audit.json`, `audit.md` and `audit.png` to `out` (default RUN/audit/TASK-SPLIT,
    SPLIT = "folder" for a lab folder) and returns the audit.json content plus `out`.
    """
    import torch

    from lymphosort.data.info import task_view
    from lymphosort.errors import ConfigError
    from lymphosort.evaluate.run import predict_proba
    from lymphosort.models.checkpoint import jsonable, load_checkpoint

    model, card = load_checkpoint(run_dir, map_location=device)
    task = task or card.task
    if not task:
        raise ConfigError(f"{run_dir}: model.json names no task; pass --task")
    view = task_view(task)
    if model.spec.num_classes != view.num_classes:
        raise ConfigError(
            f"model {card.model!r} has {model.spec.num_classes} outputs but task {task!r} has "
            f"{view.num_classes} classes ({', '.join(view.classes)})"
        )
    if data_folder is not None:
        images, labels, prov = _folder_data(data_folder, view.classes, task)
        split = "folder"
        data_info: dict[str, Any] = {**prov, "split": split}
    else:
        if data_root is None:
            raise ConfigError("give a data root (IDX files under ROOT/LymphoMNIST/raw) or a data folder")
        from lymphosort.data.lymphomnist import load_split

        data = load_split(data_root, split, task, split_version)
        images, labels = data.images.numpy(), data.labels.numpy()
        data_info = {**dict(data.provenance), "split": split, "split_id": data.split_id, "root": str(data_root)}
    rows = _subsample(labels, n_max, seed)
    data_info.update(n_available=int(len(labels)), n_audited=int(len(rows)))
    images, labels = np.ascontiguousarray(images[rows]), labels[rows]

    def predict(x: np.ndarray) -> np.ndarray:
        return predict_proba(model, torch.from_numpy(np.ascontiguousarray(x)), device=device)

    audit, arrays = audit_images(images, labels, predict, seed=seed)
    result: dict[str, Any] = {
        "flagged": audit.pop("flagged"),
        "reasons": audit.pop("reasons"),
        "run": str(run_dir),
        "model": card.model,
        "model_task": card.task,
        "model_data": dict(card.data),
        "task": task,
        "classes": list(view.classes),
        "data": data_info,
        "seed": int(seed),
        **audit,
    }
    out_dir = Path(out) if out is not None else Path(run_dir) / "audit" / f"{task}-{split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "audit.json").write_text(json.dumps(jsonable(result), indent=2, allow_nan=False) + "\n")
    (out_dir / "audit.md").write_text(_markdown(result))
    _plot(images, labels, arrays, list(view.classes), out_dir / "audit.png", seed)
    result["out"] = str(out_dir)
    return result


# --- reports ------------------------------------------------------------------------------


def _iv(pair: Sequence[float] | None, scale: float = 1.0, fmt: str = ".3f") -> str:
    return f"[{pair[0] * scale:{fmt}}, {pair[1] * scale:{fmt}}]" if pair else ""


def _markdown(r: Mapping[str, Any]) -> str:
    a, ring, mask = r["accuracy"], r["ring_only"], r["mask"]
    verdict = "**FLAGGED**: " + "; ".join(r["reasons"]) if r["flagged"] else f"**not flagged**: {NOT_FLAGGED}"
    rows = [
        f"# Confound audit: {r['model']} on {r['task']} ({r['data'].get('split')}, n={r['n']})",
        "",
        verdict,
        "",
        "| measure | value | 95% interval |",
        "|---|---|---|",
        f"| accuracy as is | {a['as_is']['accuracy']:.3f} | {_iv(a['as_is']['intervals']['accuracy'])} |",
        f"| accuracy, ring blanked ({r['blanking']['mode']}, constant {r['blanking']['constant']:.0f}) | "
        f"{a['blanked']['accuracy']:.3f} | {_iv(a['blanked']['intervals']['accuracy'])} |",
        *(
            f"| (diagnostic) ring blanked, {mode} | {v['accuracy']:.3f} | {_iv(v['intervals']['accuracy'])} |"
            for mode, v in a["blanked_variants"].items() if mode != r["blanking"]["mode"]
        ),
        f"| drop when blanked (points) | {a['drop_points']:.1f} | {_iv(a['drop_interval_points'], fmt='.1f')} |",
        f"| ring-only balanced accuracy | {ring['balanced_accuracy']:.3f} | "
        f"{_iv(ring['intervals']['balanced_accuracy'])} |",
        f"| ring-only accuracy (chance {ring['chance_accuracy']:.3f}) | {ring['accuracy']:.3f} | "
        f"{_iv(ring['intervals']['accuracy'])} |",
        "",
        f"Thresholds: flag when the ring-only balanced accuracy's lower bound exceeds chance "
        f"({ring['chance_balanced_accuracy']:.3f}) + {r['thresholds']['ring_bacc_margin']:.2f}, or accuracy falls "
        f"more than {r['thresholds']['blank_drop_points']:g} points (interval above 0) when the ring is blanked.",
        f"Cell masks: {mask['method']}; {mask['fallback_count']} of {r['n']} crops fell back to a centred disc "
        f"(r = {mask['fallback_radius_px']:.1f} px); median cell share {mask['cell_fraction_median']:.2f}.",
        f"Ring classifier: {ring['classifier']}, {ring['cv']}, on {len(ring['features'])} features "
        f"({', '.join(ring['features'])}).",
        "",
        "![crops, masks and blanked crops](audit.png)",
        "",
    ]
    return "\n".join(rows)


def _plot(
    images: np.ndarray, labels: np.ndarray, arrays: Mapping[str, np.ndarray], classes: list[str], path: Path, seed: int
) -> None:
    """Columns: a few crops per class; rows: crop, crop with mask outline, blanked crop."""
    from matplotlib.figure import Figure

    from lymphosort.evaluate.plots import save_figure

    rng = np.random.default_rng(seed)
    present = np.unique(labels)
    per = max(1, _PANEL_COLUMNS // len(present))
    cols = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in present])
    fig = Figure(figsize=(1.3 * len(cols), 4.2))
    axes = fig.subplots(3, len(cols), squeeze=False)
    for j, i in enumerate(cols):
        name = classes[labels[i]] if labels[i] < len(classes) else str(labels[i])
        fb = " (disc)" if arrays["fallback"][i] else ""
        for row, (img, title) in enumerate(
            ((images[i], name), (images[i], f"mask{fb}"), (arrays["blanked"][i], "blanked"))
        ):
            ax = axes[row, j]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if row == 1:
                ax.contour(arrays["masks"][i], levels=[0.5], colors="#ff7f0e", linewidths=0.8)
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
    fig.tight_layout()
    save_figure(fig, path)

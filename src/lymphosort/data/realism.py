"""Realism measured, not eyeballed: compare two sets of lymphocyte crops.

``compare_sets`` puts two image sets side by side (real LymphoMNIST crops, a lab's own
folder, an IDX root, or a LymphoSim preset): the appearance statistics of
``../shared/reference/lymphomnist`` per set (``lymphosort.data.appearance``), a montage, and a
"set A vs set B" discriminator (cross-validated ROC-AUC; 0.5 = the sets cannot be told apart).
The same command shows a user the domain shift between their microscope and a model's
training data before they trust its predictions.
"""

# a little over 400 lines: loading, measuring, discriminating and writing one comparison
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
from scipy import stats

from lymphosort.data.appearance import APPEARANCE_DOC, FEATURE_DOC, crop_appearance, crop_features
from lymphosort.errors import ConfigError, DatasetNotFoundError

# APPEARANCE_DOC, FEATURE_DOC, crop_appearance, crop_features: re-exported from data.appearance
__all__ = [
    "APPEARANCE_DOC",
    "FEATURE_DOC",
    "MIN_IMAGES",
    "TABLE_STATS",
    "ImageSet",
    "compare_sets",
    "crop_appearance",
    "crop_features",
    "discriminate",
    "load_image_set",
    "measure_set",
    "resample_set",
]

log = logging.getLogger(__name__)

#: The statistics of the side-by-side table, in order (all of ``APPEARANCE_DOC`` but geometry bookkeeping).
TABLE_STATS: tuple[str, ...] = (
    "crop_side", "diam_px", "diam_frac", "bg_median_ring3", "grey_std", "relief_ul_minus_lr",
    "rim_h1_amp", "rim_bright_dir_deg", "interior_std", "texture_low", "texture_mid", "texture_high",
)
_ANGLES = frozenset({"rim_bright_dir_deg"})

#: Fewest images a set must have: the discriminator's CV needs a few per fold.
MIN_IMAGES = 4
#: Smallest side (px) a crop may have and still hold a measurable cell.
MIN_SIDE = 24
#: Largest long/short side ratio still read as a (square-ish) crop; the long side is centre-cropped.
MAX_ASPECT = 1.25


# --------------------------------------------------------------------------- discriminator


def discriminate(
    feats_a: np.ndarray, feats_b: np.ndarray, *, seed: int = 0, folds: int = 5, n_boot: int = 1000
) -> dict[str, Any]:
    """Cross-validated ROC-AUC of "A vs B" with a 95% bootstrap interval (0.5 = indistinguishable).

    The larger set is subsampled (seeded) to the smaller's size so that chance stays 0.5.
    Classifier: median imputation, standardisation, L2 logistic regression (C=1) - a fixed,
    low-variance model, so the AUC measures the sets rather than the classifier's tuning.
    The interval resamples the out-of-fold predictions; it holds the test-set noise, not the
    variation between CV splits.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    m = min(len(feats_a), len(feats_b))
    if m < MIN_IMAGES:
        raise ConfigError(f"the discriminator needs at least {MIN_IMAGES} crops per set, got {m}")
    a = feats_a[np.sort(rng.choice(len(feats_a), m, replace=False))]
    b = feats_b[np.sort(rng.choice(len(feats_b), m, replace=False))]
    x = np.vstack([a, b])
    y = np.r_[np.zeros(m, int), np.ones(m, int)]
    # a feature undefined in every crop (e.g. no cell found anywhere) carries no information
    keep = np.isfinite(x).any(axis=0)
    x = x[:, keep]
    k = min(folds, m)
    model = make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)
    )
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    p = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, p))
    # resample each set on its own so that every resample has both classes; the AUC of each
    # resample is the Mann-Whitney U from tied ranks (all resamples in one vectorised call)
    pa = p[:m][rng.integers(0, m, (n_boot, m))]
    pb = p[m:][rng.integers(0, m, (n_boot, m))]
    ranks = stats.rankdata(np.concatenate([pa, pb], axis=1), axis=1)
    boots = (ranks[:, m:].sum(axis=1) - m * (m + 1) / 2) / (m * m)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {
        "auc": auc,
        "ci95": [float(lo), float(hi)],
        "n_per_set": m,
        "folds": k,
        "model": "median impute + StandardScaler + LogisticRegression(C=1), StratifiedKFold(shuffle)",
        "interval": f"percentile bootstrap of the out-of-fold predictions ({n_boot} resamples, per set)",
        "features": [name for name, kept in zip(FEATURE_DOC, keep) if kept],
    }


def feature_shift(feats_a: np.ndarray, feats_b: np.ndarray) -> dict[str, dict[str, float]]:
    """Per discriminator feature (``FEATURE_DOC`` order): B's mean shift in A's sds (``d``) and
    B's sd over A's (``sd_ratio``), over the crops where the feature is defined: which features
    tell the sets apart, in level or in spread."""
    out: dict[str, dict[str, float]] = {}
    for j, name in enumerate(FEATURE_DOC):
        a, b = feats_a[:, j], feats_b[:, j]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if len(a) < 2 or len(b) < 2 or not a.std(ddof=1) > 0:
            continue
        sa = float(a.std(ddof=1))
        out[name] = {"d": float((b.mean() - a.mean()) / sa), "sd_ratio": float(b.std(ddof=1) / sa)}
    return out


# --------------------------------------------------------------------------- loading sets


class ImageSet(NamedTuple):
    """A set of grey crops: images (uint8, each square-ish, sizes may differ), labels or None, description."""

    images: list[np.ndarray]
    labels: np.ndarray | None
    description: str


def _idx_root(path: Path) -> Path | None:
    """The data root when ``path`` is a LymphoMNIST root, its ``LymphoMNIST/`` or its ``raw/`` folder."""
    from lymphosort.data import lymphomnist as lm

    candidates = [path]
    if path.name == "LymphoMNIST":
        candidates.append(path.parent)
    if path.name == "raw" and path.parent.name == "LymphoMNIST":
        candidates.append(path.parent.parent)
    for root in candidates:
        if lm.raw_folder(root).is_dir() and any(p.exists() for p in lm.raw_files(root).values()):
            return root
    return None


def _read_crop(path: Path) -> np.ndarray:
    """One file at its own size, square (long side centre-cropped), via the lab-folder pixel rules."""
    from PIL import Image

    from lymphosort.data.folder import FolderDataError, read_image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:  # noqa: BLE001 - any decoder failure is "unreadable"
        raise ConfigError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    if min(w, h) < MIN_SIDE:
        raise ConfigError(f"{path}: {w}x{h} px is too small for a cell crop (need at least {MIN_SIDE} px a side)")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ConfigError(f"{path}: {w}x{h} px is not a square-ish crop (sides differ by more than {MAX_ASPECT}x)")
    try:
        return read_image(path, size=min(w, h), mode="center-crop")
    except FolderDataError as e:
        raise ConfigError(str(e)) from None


def _load_folder(path: Path, n: int, rng: np.random.Generator) -> ImageSet:
    from lymphosort.data.folder import IMAGE_EXTENSIONS

    files = sorted(
        f for f in path.rglob("*")
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in f.relative_to(path).parts)
    )
    if not files:
        raise ConfigError(f"{path}: no image files (readable: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if len(files) < MIN_IMAGES:
        raise ConfigError(f"{path}: {len(files)} image(s), too few to compare (need at least {MIN_IMAGES})")
    if len(files) > n:
        files = [files[i] for i in np.sort(rng.choice(len(files), n, replace=False))]
    images = [_read_crop(f) for f in files]
    sides = sorted({im.shape[0] for im in images})
    size = f"{sides[0]} px" if len(sides) == 1 else f"{sides[0]}-{sides[-1]} px"
    return ImageSet(images, None, f"folder {path} ({len(images)} crops, {size})")


def _load_idx(root: Path, n: int, rng: np.random.Generator) -> ImageSet:
    from lymphosort.data import lymphomnist as lm

    images, labels = lm.read_raw(root, train=False)
    if len(labels) < MIN_IMAGES:
        raise ConfigError(f"{root}: {len(labels)} test image(s), too few to compare (need at least {MIN_IMAGES})")
    rows = np.sort(rng.choice(len(labels), min(n, len(labels)), replace=False))
    src = lm.read_provenance(root).get("source", "?")
    return ImageSet(
        [np.asarray(images[i]) for i in rows],
        np.asarray(labels)[rows].astype(np.int64),
        f"IDX root {root} (test file, {len(rows)} crops, {src})",
    )


def load_image_set(spec: str, n: int, seed: int) -> ImageSet:
    """Up to ``n`` crops (seeded draw) from a folder of images, an IDX root, or ``sim:PRESET``.

    A folder is searched recursively for PNG/TIFF/JPEG/BMP files of any square-ish size and
    bit depth (read by ``lymphosort.data.folder`` rules, kept at their own size); an IDX root
    holds ``LymphoMNIST/raw/*`` (its test file is used); ``sim:PRESET`` renders ``n`` LymphoSim
    crops. Raises ``ConfigError`` (or ``DatasetNotFoundError`` for a missing path) with one
    sentence on bad input.
    """
    if n < MIN_IMAGES:
        raise ConfigError(f"--n must be at least {MIN_IMAGES} to compare sets, got {n}")
    rng = np.random.default_rng(seed)
    if spec.startswith("sim:"):
        from lymphosort.data.synth import get_preset, render_crops

        name = spec[4:]
        get_preset(name)  # ConfigError naming the presets
        images, labels, _ = render_crops(n, seed=seed, preset=name)
        return ImageSet(list(images), labels, f"LymphoSim preset {name} ({n} crops, {images.shape[-1]} px, seed {seed})")
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"{spec}: no such folder (give an image folder, an IDX root or sim:PRESET)")
    if not path.is_dir():
        raise ConfigError(f"{spec}: not a folder (give an image folder, an IDX root or sim:PRESET)")
    root = _idx_root(path)
    if root is not None:
        return _load_idx(root, n, rng)
    return _load_folder(path, n, rng)


# --------------------------------------------------------------------------- like with like


def _side(images: Sequence[np.ndarray]) -> int:
    return int(np.median([im.shape[0] for im in images]))


def resample_set(images: Sequence[np.ndarray], side: int) -> list[np.ndarray]:
    """Every crop not already ``side`` px resized to it smoothly (Pillow bicubic, antialiased when shrinking).

    The reference crops were smoothly resampled from a mosaic, which softens edges and
    texture; a sharper set would differ from them for that reason alone.
    """
    from PIL import Image

    out = []
    for im in images:
        if im.shape == (side, side):
            out.append(im)
            continue
        f = Image.fromarray(np.asarray(im, dtype=np.float32)).resize((side, side), Image.Resampling.BICUBIC)
        out.append(np.clip(np.rint(np.asarray(f)), 0, 255).astype(np.uint8))
    return out


# --------------------------------------------------------------------------- compare


def measure_set(images: Sequence[np.ndarray]) -> tuple[list[dict[str, float]], np.ndarray]:
    """Each crop's appearance statistics (``crop_appearance``) and the discriminator's feature
    matrix [n, len(FEATURE_DOC)], the statistics measured once for both."""
    stats_ = [crop_appearance(im) for im in images]
    return stats_, np.stack([crop_features(im, st) for im, st in zip(images, stats_)])


def _summary(values: np.ndarray, angle: bool) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    if angle:  # circular mean and sd: directions wrap at +-180
        z = np.exp(1j * np.radians(v)).mean()
        sd = np.degrees(np.sqrt(-2 * np.log(max(abs(z), 1e-12))))
        return {"mean": float(np.degrees(np.angle(z))), "sd": float(sd), "n": int(v.size)}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def _within(a: dict[str, float], b: dict[str, float], angle: bool) -> bool | None:
    if not (np.isfinite(a["mean"]) and np.isfinite(b["mean"])):
        return None
    d = b["mean"] - a["mean"]
    if angle:
        d = (d + 180.0) % 360.0 - 180.0
    return bool(abs(d) <= a["sd"] + 1e-9)


def _fmt(v: float) -> str:
    return "nan" if not np.isfinite(v) else (f"{v:.3f}" if abs(v) < 1 else f"{v:.1f}")


def _markdown(result: dict[str, Any]) -> str:
    a, b = result["a"], result["b"]
    lines = [
        f"A: {a['description']}",
        f"B: {b['description']}",
        f"like with like: {result['resample']}",
        "",
        "| statistic | A mean | A sd | B mean | B sd | B within 1 sd of A |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for name, s in result["statistics"].items():
        w = {True: "yes", False: "no", None: "-"}[s["b_within_1sd_of_a"]]
        lines.append(
            f"| {name} | {_fmt(s['a']['mean'])} | {_fmt(s['a']['sd'])} | {_fmt(s['b']['mean'])} "
            f"| {_fmt(s['b']['sd'])} | {w} |"
        )
    d = result["discriminator"]
    lines += [
        "",
        f"discriminator A vs B: ROC-AUC {d['auc']:.3f} (95% interval {d['ci95'][0]:.3f}-{d['ci95'][1]:.3f}; "
        f"{d['n_per_set']} crops per set, {d['folds']}-fold CV; 0.5 = indistinguishable)",
    ]
    shift = sorted(d.get("feature_shift", {}).items(), key=lambda kv: -abs(kv[1]["d"]))[:8]
    if shift:
        lines += ["", "features that move most (B's mean shift in A's sds; B's sd / A's sd):",
                  "; ".join(f"{k} {v['d']:+.2f} sd, x{v['sd_ratio']:.2f}" for k, v in shift)]
    if "repeats" in d:
        r = d["repeats"]
        lines.append(f"over {r['n']} subsamples and CV splits: ROC-AUC {r['mean']:.3f} +- {r['sd']:.3f} (sd)")
    return "\n".join(lines) + "\n"


def _mosaic(images: Sequence[np.ndarray], cols: int, tile: int) -> np.ndarray:
    rows = -(-len(images) // cols)
    pad = 2
    out = np.full((rows * (tile + pad) + pad, cols * (tile + pad) + pad), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        h, w = im.shape
        y = pad + r * (tile + pad) + (tile - h) // 2
        x = pad + c * (tile + pad) + (tile - w) // 2
        out[y : y + h, x : x + w] = im
    return out


def _montage(a: ImageSet, b: ImageSet, out: Path, seed: int, per_set: int = 32, cols: int = 8) -> Path:
    """PNG: a grid of A's crops beside a grid of B's (seeded pick), class names where known."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lymphosort.data.info import CLASSES

    rng = np.random.default_rng(seed)
    picks = [np.sort(rng.choice(len(s.images), min(per_set, len(s.images)), replace=False)) for s in (a, b)]
    tile = max(im.shape[0] for s in (a, b) for im in s.images)
    fig = Figure(figsize=(14, 4.6))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(wspace=0.04)
    for k, (s, pick, tag) in enumerate(zip((a, b), picks, "AB")):
        ax: Any = fig.add_subplot(1, 2, k + 1)
        ax.imshow(_mosaic([s.images[i] for i in pick], cols, tile), cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        title = s.description if len(s.description) < 70 else s.description[:67] + "..."
        ax.set_title(f"{tag}: {title}", fontsize=8)
        if s.labels is not None:
            for j, i in enumerate(pick):
                r, c = divmod(j, cols)
                name = CLASSES[int(s.labels[i])] if 0 <= int(s.labels[i]) < len(CLASSES) else str(s.labels[i])
                ax.text(2 + c * (tile + 2) + 2, 2 + r * (tile + 2) + 2, name, color="yellow", fontsize=6, va="top")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    return out


def compare_sets(
    a: str | ImageSet,
    b: str | ImageSet,
    out_dir: str | os.PathLike[str],
    *,
    n: int = 512,
    seed: int = 0,
    resample: bool = True,
    n_boot: int = 1000,
    repeats: int = 1,
) -> dict[str, Any]:
    """Compare set B against reference set A; writes compare.json, compare.md, montage.png to ``out_dir``.

    ``a``/``b``: a spec for ``load_image_set`` or a loaded ``ImageSet``. With ``resample``
    (the default) every crop whose side differs from A's (median) side is resampled smoothly
    to it before anything is measured; the output says so. ``repeats`` > 1 also runs the
    discriminator on that many seeded subsamples and CV splits (the first is the reported
    one) and gives their mean and sd: with a small set one reading moves by several
    hundredths, which decides little when fitting a simulator. Returns the JSON's content.
    """
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}")
    specs = {}
    sets = []
    for tag, s, k in (("a", a, 0), ("b", b, 1)):
        specs[tag] = s if isinstance(s, str) else None
        # seed + k: "sim:X sim:X" compares two independent draws, not one set with itself
        loaded = load_image_set(s, n, seed + k) if isinstance(s, str) else s
        if len(loaded.images) < MIN_IMAGES:
            raise ConfigError(f"set {tag.upper()} has {len(loaded.images)} crop(s), too few to compare (need {MIN_IMAGES})")
        sets.append(loaded)
    set_a, set_b = sets
    native = {tag: sorted({int(im.shape[0]) for im in s.images}) for tag, s in zip("ab", sets)}
    side = _side(set_a.images)
    note = "off (--no-resample): each set measured at its own crop size"
    if resample:
        changed = {tag: sum(im.shape[0] != side for im in s.images) for tag, s in zip("ab", sets)}
        if any(changed.values()):
            set_a = set_a._replace(images=resample_set(set_a.images, side))
            set_b = set_b._replace(images=resample_set(set_b.images, side))
            moved = ", ".join(f"{changed[t]} {t.upper()} crops ({', '.join(map(str, native[t]))} px)" for t in "ab" if changed[t])
            note = f"{moved} resampled smoothly (bicubic, antialiased) to A's {side} px side before measuring"
        else:
            note = f"not needed: both sets are {side} px"
    log.info("measuring %d + %d crops", len(set_a.images), len(set_b.images))
    (measured_a, feats_a), (measured_b, feats_b) = (measure_set(s.images) for s in (set_a, set_b))
    measured, feats = [measured_a, measured_b], [feats_a, feats_b]
    table: dict[str, Any] = {}
    for name in TABLE_STATS:
        angle = name in _ANGLES
        sa, sb = (_summary(np.array([r[name] for r in sts]), angle) for sts in measured)
        table[name] = {"doc": APPEARANCE_DOC[name], "a": sa, "b": sb, "b_within_1sd_of_a": _within(sa, sb, angle)}
    found = [float(np.mean([np.isfinite(r["diam_px"]) for r in sts])) for sts in measured]
    result: dict[str, Any] = {
        "a": {"spec": specs["a"], "description": set_a.description, "n": len(set_a.images),
              "native_sides": native["a"], "cell_found_frac": found[0]},
        "b": {"spec": specs["b"], "description": set_b.description, "n": len(set_b.images),
              "native_sides": native["b"], "cell_found_frac": found[1]},
        "seed": seed,
        "resample": note,
        "statistics": table,
        "discriminator": discriminate(feats[0], feats[1], seed=seed, n_boot=n_boot),
        "feature_doc": FEATURE_DOC,
    }
    result["discriminator"]["feature_shift"] = feature_shift(feats[0], feats[1])
    if repeats > 1:
        aucs = [result["discriminator"]["auc"]] + [
            discriminate(feats[0], feats[1], seed=seed + r, n_boot=1)["auc"] for r in range(1, repeats)]
        result["discriminator"]["repeats"] = {"n": repeats, "auc": aucs, "mean": float(np.mean(aucs)),
                                              "sd": float(np.std(aucs, ddof=1))}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "compare.json", "md": out / "compare.md", "montage": out / "montage.png"}
    result["files"] = {k: str(v) for k, v in files.items()}
    _montage(set_a, set_b, files["montage"], seed)
    files["md"].write_text(_markdown(result))
    files["json"].write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    return result


"""Write a simulated LymphoMNIST: IDX files exactly like the real release, plus provenance."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lymphosort.data.idx import write_idx
from lymphosort.data.info import CLASSES, INFO
from lymphosort.data.synth.crops import draw_labels, render_crops
from lymphosort.data.synth.presets import SimPreset, get_preset
from lymphosort.errors import ConfigError

_BLOCK = 4096  # images per render_crops call (progress granularity); fixed for determinism
_SESSION_ID_SPACE = 100_000


def split_sessions(seed: int, pre: SimPreset) -> tuple[list[int], list[int]]:
    """Disjoint train / test session ids for a seed (test sessions are never seen in train)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    ids = rng.choice(_SESSION_ID_SPACE, pre.n_train_sessions + pre.n_test_sessions, replace=False)
    return sorted(int(i) for i in ids[: pre.n_train_sessions]), sorted(int(i) for i in ids[pre.n_train_sessions:])


def _render_split(n: int, seed: int, split: int, pool: list[int], pre: SimPreset,
                  bar: tqdm | None, metas: list[dict[str, np.ndarray]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One split's crops and labels; each block's meta is appended to `metas` when given."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(8, split)))
    labels = draw_labels(n, pre, rng)
    images = np.empty((n, 64, 64), np.uint8)
    for bi, start in enumerate(range(0, n, _BLOCK)):
        stop = min(n, start + _BLOCK)
        block_seed = int(np.random.SeedSequence(seed, spawn_key=(9, split, bi)).generate_state(1)[0])
        images[start:stop], _, meta = render_crops(stop - start, seed=block_seed, preset=pre,
                                                   labels=labels[start:stop], sessions=pool)
        if metas is not None:
            metas.append(meta)
        if bar is not None:
            bar.update(stop - start)
    return images, labels


def split_meta(provenance: dict[str, Any], split: str = "test",
               preset: str | SimPreset | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Re-render a split `write_lymphomnist` wrote (its `provenance.json` as a dict) with the
    per-crop traits and nuisances it drew: (images, labels, meta), meta holding the 1-D arrays
    of `render_crops`. For analysing what a model reads; compare the images with the files
    on disk to be sure they are the same crops. `preset` for presets made in a script."""
    if provenance.get("source") != "simulated":
        raise ConfigError("split_meta needs a LymphoSim data set (provenance source 'simulated')")
    pre = get_preset(preset if preset is not None else provenance["preset"])
    if pre.name != provenance["preset"]:
        raise ConfigError(f"preset {pre.name!r} is not the one that wrote the set ({provenance['preset']!r})")
    seed = int(provenance["seed"])
    which = {"train": 0, "test": 1}
    if split not in which:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    pool = split_sessions(seed, pre)[which[split]]
    metas: list[dict[str, np.ndarray]] = []
    images, labels = _render_split(int(provenance[f"n_{split}"]), seed, which[split], pool, pre, None, metas)
    meta = {k: np.concatenate([m[k] for m in metas]) for k, v in metas[0].items() if np.ndim(v) == 1}
    return images, labels, meta


def write_lymphomnist(
    root: str | os.PathLike[str],
    n_train: int = int(INFO["n_train"]),  # type: ignore[call-overload]
    n_test: int = int(INFO["n_test"]),  # type: ignore[call-overload]
    seed: int = 0,
    preset: str | SimPreset = "default",
    progress: bool = True,
) -> Path:
    """Render a LymphoMNIST-shaped data set under ``root/LymphoMNIST`` and return that folder.

    ``raw/{train,test}_{images,labels}`` are IDX (uint8 N x 64 x 64, uint8 labels B=0, T4=1,
    T8=2) as in the real release; ``provenance.json`` says it is simulated and how. Test
    images come only from sessions never used in train. The new ``raw/`` is built in a
    temporary folder and swapped in by rename, so readers never see a half-written set.
    """
    pre = get_preset(preset)
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"n_train and n_test must be >= 1 (got {n_train}, {n_test})")
    base = Path(root) / "LymphoMNIST"
    base.mkdir(parents=True, exist_ok=True)
    train_s, test_s = split_sessions(seed, pre)
    files = INFO["files"]  # type: ignore[index]
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".synth-", dir=base))
    try:
        bar = tqdm(total=n_train + n_test, desc="LymphoSim", unit="img", disable=not progress)
        balance: dict[str, dict[str, int]] = {}
        for split, (name, n, pool) in enumerate((("train", n_train, train_s), ("test", n_test, test_s))):
            images, labels = _render_split(n, seed, split, pool, pre, bar)
            write_idx(tmp / "raw" / files[f"{name}_images"], images)
            write_idx(tmp / "raw" / files[f"{name}_labels"], labels.astype(np.uint8))
            counts = np.bincount(labels, minlength=len(CLASSES))
            balance[name] = {c: int(k) for c, k in zip(CLASSES, counts)}
        bar.close()
        prov = {
            "source": "simulated", "generator": "LymphoSim", "version": pre.version,
            "preset": pre.name, "seed": int(seed), "n_train": int(n_train), "n_test": int(n_test),
            "train_sessions": train_s, "test_sessions": test_s, "class_balance": balance,
            "classes": list(CLASSES), "image_size": [64, 64],
            "render_seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
        # swap in: old raw/ aside, new raw/ in, provenance replaced, old removed
        raw, old = base / "raw", base / f".raw-old-{tmp.name}"
        if raw.exists():
            os.replace(raw, old)
        os.replace(tmp / "raw", raw)
        os.replace(tmp / "provenance.json", base / "provenance.json")
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return base

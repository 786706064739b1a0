"""Tiny transfer data: B has a dark disc, T4 and T8 a bright one (so T4-vs-B transfers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


def disc_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 [N,64,64]: noisy mid-grey, centre disc dark for B (0), bright for T4/T8 (1, 2)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 14**2).astype(np.float32)
    base = 128 + 20 * g.standard_normal((len(labels), 64, 64))
    level = np.where(labels == 0, -90.0, 90.0)[:, None, None]
    return np.clip(base + level * disc, 0, 255).astype(np.uint8)


def write_disc_root(root: Path, n_train: int = 150, n_test: int = 120) -> Path:
    from lymphosort.data.idx import write_idx

    raw = root / "LymphoMNIST" / "raw"
    for i, (which, n) in enumerate((("train", n_train), ("test", n_test))):
        labels = (np.arange(n) % 3).astype(np.uint8)
        np.random.default_rng(i).shuffle(labels)
        write_idx(raw / f"{which}_images", disc_images(labels, seed=10 + i))
        write_idx(raw / f"{which}_labels", labels)
    (root / "LymphoMNIST" / "provenance.json").write_text(json.dumps({"source": "simulated", "preset": "discs", "seed": 0}))
    return root


@pytest.fixture(scope="session")
def disc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_disc_root(tmp_path_factory.mktemp("discs"))


@pytest.fixture(scope="session")
def t4_run(disc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-32 'T4 vs B' run: random conv features, head fitted on the t4-vs-b train split."""
    from lymphosort.data.lymphomnist import load_split
    from lymphosort.models import create_model
    from lymphosort.models.checkpoint import ModelCard, save_checkpoint
    from lymphosort.transfer.heads import FeatureCache, fit_head

    torch.manual_seed(0)
    model = create_model("tiny-32", num_classes=2).eval()
    tr = load_split(disc_root, "train", "t4-vs-b")
    va = load_split(disc_root, "val", "t4-vs-b")
    cache = FeatureCache(model)
    fit_head(model.head, cache.get(tr), tr.labels, cache.get(va), va.labels,
              lr=0.05, weight_decay=0.0, max_steps=200, patience=10, seed=0)
    run = tmp_path_factory.mktemp("t4run")
    from lymphosort.models.checkpoint import DATA_ROOT_KEY

    # the card names its data root as `train` writes it (commands default to it)
    card = ModelCard.from_model(model, task="t4-vs-b", classes=["B", "T"],
                                data={**tr.provenance, DATA_ROOT_KEY: str(disc_root)},
                                split_id=tr.split_id, config={"augment": None})
    save_checkpoint(run, model, card)
    return run

"""Plots write valid PNG files (checked by signature and by decoding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lymphosort.evaluate.plots import plot_confusion, plot_reliability, plot_roc, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _valid_png(path: Path) -> np.ndarray:
    """Decodes, has a sensible size and is not blank; returns the grey pixels."""
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100
        pixels = np.asarray(im.convert("L"), dtype=np.float32)
    assert pixels.std() > 5
    return pixels


def _differ(a: np.ndarray, b: np.ndarray) -> bool:
    """Two figures show different content (same canvas size, pixels apart)."""
    return a.shape != b.shape or float(np.abs(a - b).mean()) > 0.5


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 2 * np.eye(3)[y]
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_roc_binary_and_multiclass(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = data
    roc = _valid_png(plot_roc(y, p, tmp_path / "roc3.png", class_names=["B", "T4", "T8"]))
    chance = _valid_png(plot_roc(y, np.full_like(p, 1 / 3), tmp_path / "roc_chance.png", class_names=["B", "T4", "T8"]))
    assert _differ(roc, chance)
    yb = (y > 0).astype(int)
    pb = np.stack([p[:, 0], 1 - p[:, 0]], 1)
    _valid_png(plot_roc(yb, pb, tmp_path / "sub" / "roc2.png"))


def test_confusion_and_reliability(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = data
    good = _valid_png(plot_confusion([[50, 3, 2], [4, 60, 9], [1, 8, 63]], tmp_path / "cm.png", ["B", "T4", "T8"]))
    bad = _valid_png(plot_confusion([[5, 30, 20], [40, 6, 9], [10, 8, 6]], tmp_path / "cm2.png", ["B", "T4", "T8"]))
    assert _differ(good, bad)  # the picture follows the matrix
    calibrated = _valid_png(plot_reliability(y, p, tmp_path / "rel.png"))
    overconfident = _valid_png(plot_reliability(y, p ** 4 / (p ** 4).sum(1, keepdims=True), tmp_path / "rel2.png"))
    assert _differ(calibrated, overconfident)


def test_training_curves_from_dicts_and_csv(tmp_path: Path) -> None:
    hist = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_accuracy": 0.5 + 0.1 * e} for e in range(4)]
    _valid_png(plot_training_curves(hist, tmp_path / "curves.png"))
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,step,train_loss,val_accuracy\n0,10,0.9,\n0,10,,0.6\n1,20,0.7,\n1,20,,0.7\n")
    _valid_png(plot_training_curves(csv_path, tmp_path / "curves_csv.png"))
    with pytest.raises(ValueError):
        plot_training_curves([], tmp_path / "empty.png")

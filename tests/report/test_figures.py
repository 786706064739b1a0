from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lymphosort.errors import ConfigError
from lymphosort.report import embedding_map, plot_latency_histogram
from lymphosort.report.embedding import _subsample, embed_2d


def _blobs(n: int = 90, d: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, d)).astype(np.float32) + 6 * np.eye(3, d)[y]
    return x, y


def test_embedding_map_tsne_writes_png(tmp_path: Path) -> None:
    x, y = _blobs()
    out = embedding_map(x, y, ["B", "T4", "T8"], tmp_path / "emb" / "tsne.png", seed=0)
    assert out == tmp_path / "emb" / "tsne.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 100


def test_embedding_separates_classes_and_is_seeded() -> None:
    x, y = _blobs()
    a, b = embed_2d(x, "tsne", seed=1), embed_2d(x, "tsne", seed=1)
    np.testing.assert_allclose(a, b)
    centres = np.stack([a[y == c].mean(0) for c in range(3)])
    spread = max(a[y == c].std(0).max() for c in range(3))
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread  # well separated blobs stay apart


def test_subsample_caps_points_and_keeps_every_class() -> None:
    y = np.array([0] * 5000 + [1] * 30 + [2] * 3)
    idx = _subsample(y, 500, seed=0)
    assert len(idx) <= 500 and set(np.unique(y[idx])) == {0, 1, 2}
    np.testing.assert_array_equal(idx, _subsample(y, 500, seed=0))


def test_embedding_map_rejects_bad_input(tmp_path: Path) -> None:
    x, y = _blobs(12)
    with pytest.raises(ValueError, match="class_names"):
        embedding_map(x, y, ["B", "T4"], tmp_path / "a.png")
    with pytest.raises(ValueError, match="N = len"):
        embedding_map(x, y[:5], ["B", "T4", "T8"], tmp_path / "a.png")
    with pytest.raises(ConfigError, match="unknown embedding method"):
        embedding_map(x, y, ["B", "T4", "T8"], tmp_path / "a.png", method="lda")


def test_latency_histogram_from_samples_and_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lat = rng.gamma(4.0, 15.0, size=5000)
    a = plot_latency_histogram(lat, tmp_path / "a.png", deadline_us=500)
    counts = np.zeros(100_002, dtype=np.int64)  # realtime LatencyHistogram layout (1-us bins)
    np.add.at(counts, np.minimum(lat.astype(int), 100_001), 1)
    b = plot_latency_histogram(counts, tmp_path / "b.png", counts=True)
    for p in (a, b):
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 100
    c = plot_latency_histogram([], tmp_path / "empty.png")
    assert c.is_file()
    with pytest.raises(ValueError, match="non-negative"):
        plot_latency_histogram([1, -1], tmp_path / "bad.png", counts=True)


def test_latency_histogram_from_a_realtime_report(tmp_path: Path) -> None:
    """pipeline.stage_realtime passes the report dict: counts when it stores them, else
    the percentiles alone (still a figure, which says so)."""
    rep = {"p50_latency_us": 40.0, "p99_latency_us": 120.0, "max_latency_us": 900.0, "deadline_us": 500, "decisions": 1234}
    a = plot_latency_histogram(rep, tmp_path / "a.png")
    b = plot_latency_histogram({**rep, "latency_histogram": {"counts": [0, 3, 10, 4, 0, 1], "bin_us": 10}}, tmp_path / "b.png")
    c = plot_latency_histogram({**rep, "latency_histogram": [0, 3, 10, 4]}, tmp_path / "c.png")
    sizes = set()
    for p in (a, b, c):
        with Image.open(p) as im:
            assert im.format == "PNG"
            sizes.add(p.stat().st_size)
    assert len(sizes) == 3  # three different figures

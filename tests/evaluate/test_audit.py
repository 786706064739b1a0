"""`lymphosort audit`: a background confound is flagged, a cell-reading model is not.

Two tiny LymphoSim data sets share the same rendered crops, all of one cell class (so the
cell itself says nothing) with random labels B/T4:

* confounded: class T4's background is 40 grey levels brighter (outside the cell mask,
  feathered so no edge marks the boundary), as if T4 came from its own session;
* cell: class T4's cell has 1.8x the contrast (inside the cell only), background untouched.

A tiny-32 trained a few seconds on each learns the shortcut or the cell respectively.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage as ndi

from lymphosort.cli import main
from lymphosort.data.idx import write_idx
from lymphosort.evaluate.audit import BLANK_DROP_POINTS, RING_BACC_MARGIN, AuditError, audit_run
from lymphosort.evaluate.masks import DILATE_PX, cell_masks, ring_features

N_TRAIN, N_TEST = 480, 400
SHIFT = 40.0  # grey levels: a clearly brighter session
GAIN = 2.2  # cell contrast of the "cell" set's class 1 (LymphoSim 3.1 crops vary ~2x in contrast by themselves)


def _write_root(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], preset: str) -> Path:
    """The four IDX files in the LymphoMNIST layout (as write_lymphomnist writes them)."""
    raw = root / "LymphoMNIST" / "raw"
    for which, (x, y) in splits.items():
        write_idx(raw / f"{which}_images", x)
        write_idx(raw / f"{which}_labels", y.astype(np.uint8))
    (root / "LymphoMNIST" / "provenance.json").write_text(json.dumps({"source": "simulated", "preset": preset}))
    return root


def _neutral_crops(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 crops, random balanced labels 0/1, cell masks): every cell rendered as B."""
    from lymphosort.data.synth import render_crops

    images, _, _ = render_crops(n, seed=seed, labels=np.zeros(n, np.int64))
    y = np.random.default_rng(seed).permutation(np.arange(n) % 2)
    masks, _, _ = cell_masks(images)
    return images, y, masks


def _confounded(images: np.ndarray, y: np.ndarray, masks: np.ndarray) -> np.ndarray:
    outside = 1.0 - ndi.gaussian_filter(masks.astype(np.float32), (0, 2, 2))
    f = images.astype(np.float32)
    f[y == 1] += SHIFT * outside[y == 1]  # the background only: the cell says nothing
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def _cell_signal(images: np.ndarray, y: np.ndarray, masks: np.ndarray) -> np.ndarray:
    inner = ndi.binary_erosion(masks, np.ones((1, 7, 7), bool))  # strictly inside the cell
    f = images.astype(np.float32)
    level = np.nanmedian(np.where(masks, np.nan, f).reshape(len(f), -1), axis=1)[:, None, None]  # background
    f = np.where(inner & (y == 1)[:, None, None], level + GAIN * (f - level), f)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def _train(root: Path, out: Path) -> Path:
    from lymphosort.train.config import TrainConfig
    from lymphosort.train.fit import fit

    cfg = TrainConfig(model="tiny-32", task="t4-vs-b", epochs=12, batch_size=32, lr=5e-3, patience=0, seed=0,
                      warmup_frac=0.1, data_root=str(root), augment=None)
    return fit(cfg, out, quiet=True, evaluate=False).run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """{"confounded" | "cell": (data root, trained run folder)}."""
    base = tmp_path_factory.mktemp("audit")
    crops = {"train": _neutral_crops(N_TRAIN, 11), "test": _neutral_crops(N_TEST, 12)}
    out = {}
    for name, make in (("confounded", _confounded), ("cell", _cell_signal)):
        splits = {w: (make(x, y, m), y) for w, (x, y, m) in crops.items()}
        root = _write_root(base / name, splits, f"audit-{name}")
        out[name] = (root, _train(root, base / f"run-{name}"))
    return out


def _fake_run(run: Path, classes: tuple[str, ...] = ("B", "T"), task: str = "t4-vs-b") -> Path:
    """An untrained tiny-32 run folder (for the input-handling tests)."""
    from lymphosort.models import create_model
    from lymphosort.models.checkpoint import ModelCard, save_checkpoint

    torch.manual_seed(0)
    model = create_model("tiny-32", num_classes=len(classes))
    save_checkpoint(run, model, ModelCard.from_model(model, task=task, classes=list(classes)))
    return run


# --- verdicts -----------------------------------------------------------------------------


def test_background_confound_is_flagged(runs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    root, run = runs["confounded"]
    r = audit_run(run, root, out=tmp_path / "a")
    acc, ring = r["accuracy"], r["ring_only"]
    assert acc["as_is"]["accuracy"] > 0.9  # the model did learn the shortcut
    assert r["flagged"] is True and len(r["reasons"]) == 2
    assert ring["intervals"]["balanced_accuracy"][0] > ring["chance_balanced_accuracy"] + RING_BACC_MARGIN
    assert acc["drop_points"] > BLANK_DROP_POINTS and acc["drop_interval_points"][0] > 0
    assert acc["blanked"]["accuracy"] < 0.75  # without the ring it is closer to a coin than to the model
    assert r["n"] == 300 and r["data"]["split"] == "test" and r["task"] == "t4-vs-b"
    saved = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert saved["flagged"] is True and saved["thresholds"]["blank_drop_points"] == BLANK_DROP_POINTS
    assert saved["blanking"]["mode"] == "global" and 0 <= saved["blanking"]["constant"] <= 255
    assert set(saved["accuracy"]["blanked_variants"]) == {"level-matched", "global", "own-median"}
    assert saved["ring_only"]["features"] and saved["mask"]["fallback_count"] <= 3
    assert "FLAGGED" in (tmp_path / "a" / "audit.md").read_text()
    with Image.open(tmp_path / "a" / "audit.png") as im:
        im.verify()


def test_cell_reading_model_is_not_flagged(runs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    root, run = runs["cell"]
    r = audit_run(run, root, out=tmp_path / "a")
    acc, ring = r["accuracy"], r["ring_only"]
    assert acc["as_is"]["accuracy"] > 0.85  # the model reads the cell well ...
    assert r["flagged"] is False and r["reasons"] == []
    assert abs(acc["drop_points"]) < BLANK_DROP_POINTS  # ... and keeps it when only the cell is shown
    assert ring["intervals"]["balanced_accuracy"][0] < 0.5 + RING_BACC_MARGIN
    assert ring["balanced_accuracy"] < 0.6
    assert "not flagged" in (tmp_path / "a" / "audit.md").read_text()


def test_cli_prints_the_verdict_first_and_writes_the_default_folder(
    runs: dict[str, tuple[Path, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, run = runs["confounded"]
    assert main(["audit", str(run), "--data-root", str(root), "--n", "150", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("FLAGGED") and "ring" in lines[0]
    saved = json.loads((run / "audit" / "t4-vs-b-test" / "audit.json").read_text())
    # a stratified subsample: 150 of the 300 test crops, both classes kept
    assert saved["n"] == 150 and saved["data"]["n_available"] == 300
    assert sorted(saved["support"].values()) == [75, 75]


# --- masks and ring features --------------------------------------------------------------


def _disc_crops(radius: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy discs of known radius: dark, bright, relief-only (one rim dark, one bright), off-centre."""
    yy, xx = np.indices((64, 64)).astype(np.float64)
    crops, truths = [], []
    for kind, (cy, cx) in (("dark", (31.5, 31.5)), ("bright", (31.5, 31.5)), ("relief", (31.5, 31.5)),
                           ("dark", (28.0, 35.0))):
        r = np.hypot(yy - cy, xx - cx)
        truth = r <= radius
        f = np.full((64, 64), 120.0)
        if kind == "dark":
            f[truth] -= 35
        elif kind == "bright":
            f[truth] += 35
        else:  # only the edges show, with opposite signs: the interior equals the background
            edge = np.exp(-((r - radius) ** 2) / 2.0)
            f += 40 * edge * (xx - cx) / np.maximum(r, 1e-6)
        f = ndi.gaussian_filter(f, 1.0) + rng.normal(0, 3.0, f.shape)
        crops.append(np.clip(np.rint(f), 0, 255).astype(np.uint8))
        truths.append(truth)
    return np.stack(crops), np.stack(truths)


@pytest.mark.parametrize("radius", [9.0, 16.0, 24.0])
def test_mask_covers_a_disc_of_known_radius(radius: float) -> None:
    images, truth = _disc_crops(radius, np.random.default_rng(int(radius)))
    masks, fallback, _ = cell_masks(images)
    assert not fallback.any()
    for m, t in zip(masks, truth):
        assert (m & t).sum() / t.sum() > 0.99  # the whole cell is kept ...
        # ... and not much more: the dilation plus the reach of the twice-blurred edge
        assert m.sum() <= np.pi * (radius + DILATE_PX + 5) ** 2


def test_mask_falls_back_to_a_centred_disc_when_there_is_no_cell() -> None:
    rng = np.random.default_rng(0)
    images, _ = _disc_crops(12.0, rng)
    blank = np.clip(rng.normal(120, 3, (2, 64, 64)), 0, 255).astype(np.uint8)  # noise only
    masks, fallback, radius = cell_masks(np.concatenate([images, blank]))
    assert fallback.tolist() == [False] * 4 + [True, True]
    # the disc takes the median radius of the crops that did segment (before dilation)
    undilated, _, _ = cell_masks(images, dilate=0)
    assert radius == pytest.approx(np.median(np.sqrt(undilated.sum((1, 2)) / np.pi)))
    assert 12 < radius < 18
    yy, xx = np.indices((64, 64))
    expected = np.hypot(yy - 31.5, xx - 31.5) <= radius + DILATE_PX
    assert (masks[4] == expected).mean() > 0.98 and masks[4, 31, 31] and not masks[4, 0, 0]


def test_ring_features_do_not_see_the_cell() -> None:
    images, _ = _disc_crops(14.0, np.random.default_rng(1))
    masks, _, _ = cell_masks(images)
    other = images.copy()
    other[masks] = 255 - other[masks]  # a completely different cell, same background
    f, g = ring_features(images, masks), ring_features(other, masks)
    assert np.isfinite(f).all() and np.array_equal(f, g)
    brighter = np.where(masks, images, np.clip(images.astype(int) + 30, 0, 255)).astype(np.uint8)
    assert ring_features(brighter, masks)[:, 0] == pytest.approx(f[:, 0] + 30, abs=0.5)


# --- lab folders and bad input ------------------------------------------------------------


def _png_folder(root: Path, counts: dict[str, int], size: int = 64) -> Path:
    from lymphosort.data.synth import render_crops

    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        images, _, _ = render_crops(n, seed=k, labels=np.zeros(n, np.int64))
        for i, im in enumerate(images):
            Image.fromarray(im).resize((size, size)).save(root / name / f"{i}.png")
    return root


def test_lab_folder_with_on_disk_class_names_is_mapped_by_the_task(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    folder = _png_folder(tmp_path / "lab", {"B": 6, "T4": 7, "T8": 5})
    r = audit_run(run, None, data_folder=folder)
    # t4-vs-b: B -> 0, T4 -> T = 1, T8 dropped
    assert r["n"] == 13 and r["support"] == {0: 6, 1: 7} and r["classes"] == ["B", "T"]
    assert r["data"]["source"] == "folder" and r["data"]["mapped_by_task"] == "t4-vs-b"
    assert (run / "audit" / "t4-vs-b-folder" / "audit.json").is_file()


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lymphosort: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_gives_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = str(_fake_run(tmp_path / "run"))
    assert "no model card" in _error_line(capsys, ["audit", str(tmp_path / "nope"), "--data-root", str(tmp_path)])
    (tmp_path / "empty").mkdir()
    err = _error_line(capsys, ["audit", run, "--data-folder", str(tmp_path / "empty")])
    assert "no class subfolder" in err
    one = _png_folder(tmp_path / "one", {"B": 1})
    assert "at least 2 classes with >= 5 images" in _error_line(capsys, ["audit", run, "--data-folder", str(one)])
    # an IDX root of 32x32 crops: not LymphoMNIST-shaped
    rng = np.random.default_rng(0)
    small = {w: (rng.integers(0, 256, (20, 32, 32), dtype=np.uint8), np.arange(20) % 3) for w in ("train", "test")}
    root = _write_root(tmp_path / "small", small, "small")
    assert "expected 64x64" in _error_line(capsys, ["audit", run, "--data-root", str(root)])
    assert "not found" in _error_line(capsys, ["audit", run, "--data-root", str(tmp_path / "missing")])


def test_audit_images_rejects_wrong_shapes() -> None:
    from lymphosort.evaluate.audit import audit_images

    def predict(x: np.ndarray) -> np.ndarray:
        return np.full((len(x), 2), 0.5)

    with pytest.raises(AuditError, match="square crops"):
        audit_images(np.zeros((10, 64, 48), np.uint8), np.arange(10) % 2, predict)
    with pytest.raises(AuditError, match="10 images but 9 labels"):
        audit_images(np.zeros((10, 64, 64), np.uint8), np.arange(9) % 2, predict)

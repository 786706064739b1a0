"""LymphoSim: determinism, shapes, labels, held-out sessions, morphology, realism, flow frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lymphosort.data.idx import read_idx
from lymphosort.data.synth import PRESETS, render_crops, render_flow, write_lymphomnist
from lymphosort.data.synth.stats import crop_statistics
from lymphosort.errors import ConfigError

REF = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "brightfield"


@pytest.fixture(scope="module")
def crops():
    return render_crops(300, seed=11)


def test_deterministic_for_a_seed():
    a, la, ma = render_crops(40, seed=5)
    b, lb, mb = render_crops(40, seed=5)
    c, _, _ = render_crops(40, seed=6)
    assert a.tobytes() == b.tobytes() and (la == lb).all()
    assert all(np.array_equal(ma[k], mb[k]) for k in ma)
    assert a.tobytes() != c.tobytes()


def test_dtype_shape_range(crops):
    img, lab, meta = crops
    assert img.dtype == np.uint8 and img.shape == (300, 64, 64)
    assert lab.dtype == np.int64 and set(np.unique(lab)) == {0, 1, 2}
    assert all(len(v) == 300 for v in meta.values())
    assert 40 < img.mean() < 220 and img.std() > 5
    small, _, _ = render_crops(3, seed=0, size=32)
    assert small.shape == (3, 32, 32)


def test_labels_and_sessions_follow_arguments():
    want = np.array([2, 0, 1, 1, 0, 2, 2])
    _, lab, meta = render_crops(7, seed=1, labels=want, sessions=[40, 41])
    assert (lab == want).all() and set(meta["session"]) <= {40, 41}
    with pytest.raises(ConfigError):
        render_crops(3, seed=1, labels=[0, 1])


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ConfigError, match="default"):
        render_crops(2, seed=0, preset="nope")
    with pytest.raises(ConfigError):
        next(iter(render_flow(1, seed=0, preset="nope")))
    assert {"default", "easy", "hard"} <= set(PRESETS)


def test_class_morphology_ordering(crops):
    _, lab, meta = crops
    mean = lambda k, c: meta[k][lab == c].mean()  # noqa: E731
    # documented (v2): T8 largest, T4 smallest; T4 rougher than B and T8; T8 most granular,
    # then T4; nucleus ratio B > T8 > T4
    assert mean("radius", 2) > mean("radius", 0) > mean("radius", 1)
    assert mean("roughness", 1) > mean("roughness", 2) and mean("roughness", 1) > mean("roughness", 0)
    assert mean("granularity", 2) > mean("granularity", 1) > mean("granularity", 0)
    assert mean("nucleus_ratio", 0) > mean("nucleus_ratio", 2) > mean("nucleus_ratio", 1)
    # overlapping, not separable: some B are smaller than the mean T4
    assert (meta["radius"][lab == 0] < mean("radius", 1)).any()


def test_background_levels_match_real_sessions(crops):
    img, _, meta = crops
    bg = np.median(img.reshape(len(img), -1), axis=1)
    near = np.minimum(np.abs(bg - 128), np.abs(bg - 170))
    assert np.percentile(near, 95) <= 10
    assert np.abs(bg - meta["background"]).mean() < 6


def test_noise_within_real_range(crops):
    if not REF.is_dir():
        pytest.skip(f"reference crops not found at {REF}")
    from PIL import Image

    real = [np.asarray(Image.open(p).convert("L"))[18:82, 18:82] for p in sorted(REF.glob("*.png"))]
    if not real:
        pytest.skip(f"no PNG crops in {REF}")
    rn = np.array([crop_statistics(r)["noise_std"] for r in real])
    img, _, _ = crops
    sn = np.array([crop_statistics(i)["noise_std"] for i in img[:60]])
    lo, hi = rn.min() * 0.8, rn.max() * 1.2
    assert lo <= np.median(sn) <= hi, (np.median(sn), rn.min(), rn.max())
    sd = np.array([crop_statistics(i)["cell_diameter"] for i in img[:60]])
    rd = np.array([crop_statistics(r)["cell_diameter"] for r in real])
    assert abs(np.median(sd) - np.median(rd)) < 3.0


def test_write_lymphomnist_held_out_sessions(tmp_path):
    base = write_lymphomnist(tmp_path, n_train=60, n_test=30, seed=2, progress=False)
    assert base == tmp_path / "LymphoMNIST"
    tr, te = read_idx(base / "raw" / "train_images"), read_idx(base / "raw" / "test_images")
    lt = read_idx(base / "raw" / "train_labels")
    assert tr.shape == (60, 64, 64) and te.shape == (30, 64, 64) and tr.dtype == np.uint8
    assert lt.dtype == np.uint8 and np.bincount(lt, minlength=3).tolist() == [20, 20, 20]
    prov = json.loads((base / "provenance.json").read_text())
    assert prov["source"] == "simulated" and prov["generator"] == "LymphoSim"
    assert prov["seed"] == 2 and prov["preset"] == "default" and prov["n_test"] == 30
    assert not set(prov["train_sessions"]) & set(prov["test_sessions"])
    assert not [p for p in base.iterdir() if p.name.startswith(".")]  # temp folders cleaned
    again = write_lymphomnist(tmp_path, n_train=60, n_test=30, seed=2, progress=False)
    assert read_idx(again / "raw" / "train_images").tobytes() == tr.tobytes()


def test_flow_frames_truth():
    frames = list(render_flow(160, seed=3, cell_rate=0.04, p_pair=0.3))
    h, w = frames[0].image.shape
    assert frames[0].image.dtype == np.uint8 and (h, w) == (96, 320)
    assert frames[1].t_s > frames[0].t_s
    seen: dict[int, list[float]] = {}
    for f in frames:
        for c in f.truth:
            x0, y0, x1, y1 = c.box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            seen.setdefault(c.cell_id, []).append(c.center[0])
            if c.whole:
                # a cell is darker than the frame's background at its box centre region
                cx, cy = int(round(c.center[0])), int(round(c.center[1]))
                core = f.image[cy - 3:cy + 4, cx - 3:cx + 4].astype(float)
                assert core.mean() < np.median(f.image) - 8
    assert len(seen) >= 3
    for xs in seen.values():
        assert all(b > a for a, b in zip(xs, xs[1:]))  # same id, moving in +x
    assert any(not c.isolated for f in frames for c in f.truth)
    again = list(render_flow(5, seed=3, cell_rate=0.04, p_pair=0.3))
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(frames, again))


def test_trait_scale_narrows_class_spreads_only() -> None:
    from lymphosort.data.synth.presets import get_preset, with_trait_scale
    from lymphosort.errors import ConfigError

    base = get_preset("default")
    easy = with_trait_scale("default", 0.5)
    assert easy.name == "default-x0.5" and easy.sessions == base.sessions
    for a, b in zip(base.classes, easy.classes):
        assert b.radius.mean == a.radius.mean and b.radius.sd == pytest.approx(0.5 * a.radius.sd)
        assert b.granularity.sd == pytest.approx(0.5 * a.granularity.sd)
    with pytest.raises(ConfigError, match="trait scale"):
        with_trait_scale(base, 0)


def test_trait_means_move_one_class_trait_only() -> None:
    from lymphosort.data.synth.presets import get_preset, with_trait_means
    from lymphosort.errors import ConfigError

    base = get_preset("default")
    moved = with_trait_means("default", {"T8.radius": 12.5, "B.granularity": "0.05"})
    assert moved.name == "default+T8.radius=12.5,B.granularity=0.05"
    t8, b = moved.classes[2], moved.classes[0]
    assert t8.radius.mean == 12.5 and t8.radius.sd == base.classes[2].radius.sd
    assert b.granularity.mean == 0.05 and moved.classes[1] == base.classes[1]
    for bad in ({"T9.radius": 1}, {"T8.size": 1}, {"T8.radius": "big"}):
        with pytest.raises(ConfigError):
            with_trait_means(base, bad)


def test_moving_one_class_leaves_the_other_classes_pixels_unchanged() -> None:
    # Why 2.1 (T8 radius only) keeps every T4-vs-B crop of 2.0: sessions are salted by the
    # preset's name and trait draws are shifted normals, so another class's traits cannot
    # change what B and T4 render. A rename (a new session table) must change them.
    from dataclasses import replace

    from lymphosort.data.synth.presets import with_trait_means

    moved = with_trait_means("default", {"T8.radius": 13.0})
    a, la, _ = render_crops(48, seed=5)
    b, lb, mb = render_crops(48, seed=5, preset=replace(moved, name="default"))
    c, _, _ = render_crops(48, seed=5, preset=moved)
    assert np.array_equal(la, lb) and {0, 1, 2} <= set(la.tolist())
    other = la != 2
    assert np.array_equal(a[other], b[other])
    assert not np.array_equal(a[~other], b[~other]) and mb["radius"][~other].mean() > 12.5
    assert not np.array_equal(a[other], c[other])

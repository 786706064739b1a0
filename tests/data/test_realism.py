"""`lymphosort data compare`: appearance statistics against known truth and the reference, loading, discriminator."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from lymphosort.cli import main
from lymphosort.data import appearance, realism
from lymphosort.data.appearance import APPEARANCE_DOC, FEATURE_DOC, crop_appearance, crop_features
from lymphosort.data.realism import TABLE_STATS, ImageSet, compare_sets, discriminate, load_image_set
from lymphosort.errors import ConfigError, DatasetNotFoundError

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "lymphomnist"


def relief_disc(
    side: int = 59, diameter: float = 40.0, bright_deg: float = 45.0, bg: float = 120.0, relief: float = 100.0,
    centre: tuple[float, float] | None = None, noise: float = 0.0, seed: int = 0,
) -> np.ndarray:
    """A DIC-like cell: a slightly dark disc plus the derivative of its outline along a shear
    direction, so the rim is brightest towards ``bright_deg`` (image coordinates, y down)."""
    rng = np.random.default_rng(seed)
    c = ((side - 1) / 2, (side - 1) / 2) if centre is None else centre
    yy, xx = np.mgrid[:side, :side]
    disc = ndimage.gaussian_filter((np.hypot(xx - c[0], yy - c[1]) <= diameter / 2).astype(float), 1.0)
    gy, gx = np.gradient(disc)
    a = np.radians(bright_deg)
    # the disc falls off outward, so minus its slope along the shear is bright on that side
    img = bg - 12.0 * disc - relief * 2.0 * (np.cos(a) * gx + np.sin(a) * gy)
    img += noise * rng.standard_normal(img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def disc_set(n: int, seed: int, diameter: float = 40.0, relief: float = 100.0, side: int = 59) -> list[np.ndarray]:
    """n discs with seeded random diameter, brightness, relief direction, position and noise."""
    rng = np.random.default_rng(seed)
    return [
        relief_disc(side, diameter + rng.normal(0, 2), 45 + rng.normal(0, 10), 110 + rng.normal(0, 15),
                    relief + rng.normal(0, 15), ((side - 1) / 2 + rng.normal(0, 1), (side - 1) / 2 + rng.normal(0, 1)),
                    noise=3.0, seed=int(rng.integers(1 << 30)))
        for _ in range(n)
    ]


def write_pngs(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"c{i:03d}.png")
    return folder


# --------------------------------------------------------------------------- statistics vs known truth


#: "Outer" diameter (the reference's): where the edge response falls to half its peak outside the
#: cell. For a disc whose edge is a Gaussian-blurred step (sigma 1, as `relief_disc`) seen through
#: the sigma-1 gradient filter, that is sqrt(2 ln 2) * sqrt(1 + 1) px beyond the true radius.
OUTER = 2 * np.sqrt(2 * np.log(2)) * np.sqrt(2.0)


@pytest.mark.parametrize(("side", "diameter"), [(59, 40.0), (64, 48.0), (51, 36.0), (73, 55.0)])
def test_diameter_of_a_known_disc(side: int, diameter: float) -> None:
    st = crop_appearance(relief_disc(side, diameter, relief=0.0, noise=2.0))
    assert st["diam_px"] == pytest.approx(diameter + OUTER, abs=0.5)
    assert st["diam_frac"] == pytest.approx((diameter + OUTER) / side, abs=0.5 / side)
    assert st["crop_side"] == side
    assert (st["centre_x"], st["centre_y"]) == pytest.approx(((side - 1) / 2, (side - 1) / 2), abs=0.3)
    # a relief band on the rim (DIC) widens the edge outward: found, up to ~2 px further out
    relief = crop_appearance(relief_disc(side, diameter, noise=2.0))["diam_px"]
    assert diameter + OUTER - 0.5 < relief < diameter + OUTER + 3.0


def test_off_centre_disc_is_found_where_it_is() -> None:
    st = crop_appearance(relief_disc(59, 40.0, centre=(26.0, 32.5)))
    assert (st["centre_x"], st["centre_y"]) == pytest.approx((26.0, 32.5), abs=0.5)
    assert 40.0 + OUTER - 0.5 < st["diam_px"] < 40.0 + OUTER + 3.0


@pytest.mark.parametrize("bright_deg", [45.0, -90.0, 160.0, -135.0])
def test_relief_direction(bright_deg: float) -> None:
    st = crop_appearance(relief_disc(59, 40.0, bright_deg=bright_deg, noise=2.0))
    diff = (st["rim_bright_dir_deg"] - bright_deg + 180) % 360 - 180
    assert abs(diff) < 5.0
    assert st["rim_h1_amp"] > 5.0
    # upper-left minus lower-right: negative when the bright side faces the lower right
    expected_sign = -np.sign(np.cos(np.radians(bright_deg - 45.0)))
    assert np.sign(st["relief_ul_minus_lr"]) == expected_sign


def test_background_and_grey_std_follow_their_definitions() -> None:
    img = relief_disc(59, 40.0, bg=137.0, noise=1.0)
    img[0, :] = 255  # one bright border row moves the median of the 3-px ring by less than a level
    st = crop_appearance(img)
    ring = np.ones(img.shape, bool)
    ring[3:-3, 3:-3] = False
    assert st["bg_median_ring3"] == np.median(img[ring])
    assert st["bg_median_ring3"] == pytest.approx(137.0, abs=1.0)
    assert st["grey_std"] == pytest.approx(float(img.astype(float).std()))


@pytest.mark.parametrize(("period", "band"), [(11.0, "texture_low"), (5.5, "texture_mid"), (3.0, "texture_high")])
def test_texture_band_of_a_granule_period(period: float, band: str) -> None:
    base = relief_disc(59, 44.0, noise=1.0).astype(float)
    yy, xx = np.mgrid[:59, :59]
    inside = np.hypot(xx - 29, yy - 29) < 17
    grains = np.where(inside, 20 * np.sin(2 * np.pi * (xx + 0.5 * yy) / period), 0.0)
    st = crop_appearance(np.clip(base + grains, 0, 255).astype(np.uint8))
    assert st[band] > 0.5, {k: st[k] for k in ("texture_low", "texture_mid", "texture_high")}
    assert st["texture_low"] + st["texture_mid"] + st["texture_high"] <= 1 + 1e-9
    assert st["interior_std"] > crop_appearance(base.astype(np.uint8))["interior_std"] + 10


def test_flat_crop_has_no_cell() -> None:
    st = crop_appearance(np.full((59, 59), 90, np.uint8))
    assert set(st) == set(APPEARANCE_DOC)
    assert st["bg_median_ring3"] == 90 and st["grey_std"] == 0
    assert np.isnan(st["diam_px"]) and np.isnan(st["relief_ul_minus_lr"])
    assert len(crop_features(np.full((59, 59), 90, np.uint8))) == len(FEATURE_DOC)


def test_every_table_statistic_is_documented() -> None:
    assert set(TABLE_STATS) <= set(APPEARANCE_DOC)
    assert all(APPEARANCE_DOC[k].strip() for k in APPEARANCE_DOC)
    assert crop_features(relief_disc()).shape == (len(FEATURE_DOC),)


# --------------------------------------------------------------------------- the reference crops


def _manifest() -> tuple[list[dict[str, str]], list[np.ndarray]]:
    if not (REFERENCE / "crops" / "manifest.csv").is_file():
        pytest.skip(f"needs ../shared/reference/lymphomnist (the real crops), not found at {REFERENCE}")
    rows = list(csv.DictReader((REFERENCE / "crops" / "manifest.csv").open()))
    images = [np.asarray(Image.open(REFERENCE / "crops" / r["file"])) for r in rows]
    return rows, images


def test_rim_statistics_reproduce_the_manifest_given_its_circle() -> None:
    rows, images = _manifest()
    for r, im in zip(rows, images):
        got = appearance._rim_and_texture(im.astype(float), float(r["centre_x"]), float(r["centre_y"]),
                                       float(r["diam_px"]) / 2)
        for key in ("relief_ul_minus_lr", "rim_h1_amp", "rim_bright_dir_deg"):
            assert got[key] == pytest.approx(float(r[key]), abs=1e-3), (r["file"], key)


def test_statistics_agree_with_the_manifest() -> None:
    rows, images = _manifest()
    got = [crop_appearance(im) for im in images]

    def err(key: str) -> np.ndarray:
        d = np.array([g[key] for g in got]) - np.array([float(r[key]) for r in rows])
        return (d + 180) % 360 - 180 if key == "rim_bright_dir_deg" else d

    # measured on the 64 crops: MAE 0.34 / 0.17 / 0.18 / 2.5 / 1.9 / 0.95, means within 0.1
    limits = {"diam_px": 0.5, "centre_x": 0.3, "centre_y": 0.3, "relief_ul_minus_lr": 3.5,
              "rim_h1_amp": 2.7, "rim_bright_dir_deg": 1.5}
    for key, lim in limits.items():
        assert np.abs(err(key)).mean() < lim, key
        assert abs(err(key).mean()) < lim / 2, key
    assert np.abs(err("diam_px")).max() < 2.0
    for key in ("bg_median_ring3", "grey_std"):
        assert np.abs(err(key)).max() < 1e-3, key


# --------------------------------------------------------------------------- discriminator


def test_same_distribution_is_indistinguishable() -> None:
    fa = np.stack([crop_features(im) for im in disc_set(60, seed=1)])
    fb = np.stack([crop_features(im) for im in disc_set(60, seed=2)])
    d = discriminate(fa, fb, seed=0, n_boot=300)
    assert d["ci95"][0] <= 0.5 <= d["ci95"][1]
    assert abs(d["auc"] - 0.5) < 0.15
    assert d["n_per_set"] == 60 and d["folds"] == 5


def test_different_sets_are_told_apart_and_balanced() -> None:
    fa = np.stack([crop_features(im) for im in disc_set(40, seed=1)])
    fb = np.stack([crop_features(im) for im in disc_set(70, seed=2, diameter=32.0, relief=40.0)])
    d = discriminate(fa, fb, seed=0, n_boot=300)
    assert d["auc"] > 0.95 and d["ci95"][0] > 0.9
    assert d["n_per_set"] == 40  # the larger set is subsampled


def test_discriminator_needs_a_few_crops() -> None:
    f = np.zeros((3, len(FEATURE_DOC)))
    with pytest.raises(ConfigError, match="at least"):
        discriminate(f, f)


# --------------------------------------------------------------------------- loading


def test_folder_of_mixed_formats_and_sizes(tmp_path: Path) -> None:
    folder = tmp_path / "lab"
    (folder / "day2").mkdir(parents=True)
    Image.fromarray(relief_disc(59)).save(folder / "a.png")
    Image.fromarray(relief_disc(64, 48.0).astype(np.uint16) * 257).save(folder / "b.png")  # 16 bit
    Image.fromarray(relief_disc(51, 36.0)).save(folder / "day2" / "c.tif")
    Image.fromarray(relief_disc(60, 40.0)[:, :-2]).save(folder / "d.jpg", quality=95)  # 58 wide: centre-cropped
    (folder / "notes.txt").write_text("not an image")
    s = load_image_set(str(folder), n=10, seed=0)
    assert sorted(im.shape for im in s.images) == [(51, 51), (58, 58), (59, 59), (64, 64)]
    assert s.labels is None and "4 crops" in s.description
    b16 = next(im for im in s.images if im.shape == (64, 64))
    assert np.array_equal(b16, relief_disc(64, 48.0))  # v * 257 / 257 round-trips
    assert len(load_image_set(str(folder), n=4, seed=0).images) == 4


def test_folder_draw_is_seeded(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path / "f", disc_set(12, seed=3))
    a, b, c = (load_image_set(str(folder), n=5, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    assert not all(np.array_equal(x, y) for x, y in zip(a.images, c.images))


def test_idx_root(tmp_path: Path) -> None:
    from tests.conftest import write_tiny_lymphomnist

    write_tiny_lymphomnist(tmp_path / "root", n_test=24, provenance={"source": "simulated"})
    for spec in (tmp_path / "root", tmp_path / "root" / "LymphoMNIST", tmp_path / "root" / "LymphoMNIST" / "raw"):
        s = load_image_set(str(spec), n=10, seed=0)
        assert len(s.images) == 10 and s.images[0].shape == (64, 64)
        assert s.labels is not None and set(s.labels.tolist()) <= {0, 1, 2}
        assert "IDX root" in s.description


def test_sim_preset() -> None:
    s = load_image_set("sim:default", n=6, seed=0)
    assert len(s.images) == 6 and s.images[0].dtype == np.uint8 and s.labels is not None
    with pytest.raises(ConfigError, match="unknown LymphoSim preset"):
        load_image_set("sim:no-such-preset", n=6, seed=0)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda d: d / "missing", DatasetNotFoundError, "no such folder"),
        (lambda d: d, ConfigError, "no image files"),
        (lambda d: write_pngs(d, disc_set(1, 0)), ConfigError, "too few to compare"),
        (lambda d: write_pngs(d, [np.zeros((16, 16), np.uint8)] * 5), ConfigError, "too small"),
        (lambda d: write_pngs(d, [np.zeros((64, 30), np.uint8)] * 5), ConfigError, "not a square-ish"),
    ],
    ids=["missing", "empty", "one-image", "too-small", "not-square"],
)
def test_bad_sets(tmp_path: Path, make: Callable[[Path], Path], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        load_image_set(str(make(tmp_path)), n=8, seed=0)


def test_corrupt_and_mismatched_files(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path / "f", disc_set(5, 0))
    (folder / "zz.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ConfigError, match="zz.png"):
        load_image_set(str(folder), n=10, seed=0)
    (folder / "zz.png").unlink()
    Image.fromarray(np.zeros((59, 100), np.uint8)).save(folder / "wide.png")
    with pytest.raises(ConfigError, match="wide.png.*59"):
        load_image_set(str(folder), n=10, seed=0)


def test_file_instead_of_folder(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a folder"):
        load_image_set(str(tmp_path / "x.png"), n=8, seed=0)


# --------------------------------------------------------------------------- compare_sets and the CLI


def test_compare_resamples_like_with_like(tmp_path: Path) -> None:
    ref = ImageSet(disc_set(24, seed=1), None, "discs 59")
    big = ImageSet(disc_set(24, seed=2, side=64, diameter=40 * 64 / 59), None, "discs 64")
    res = compare_sets(ref, big, tmp_path / "out", n_boot=200)
    assert "24 B crops (64 px) resampled" in res["resample"] and "59 px" in res["resample"]
    assert res["statistics"]["crop_side"]["b"]["mean"] == 59
    assert res["b"]["native_sides"] == [64]
    # same cells at the same scale once resampled: diameters agree
    assert res["statistics"]["diam_px"]["b_within_1sd_of_a"] is True
    off = compare_sets(ref, big, tmp_path / "raw", resample=False, n_boot=200)
    assert "off" in off["resample"] and off["statistics"]["crop_side"]["b"]["mean"] == 64
    assert off["statistics"]["diam_px"]["b"]["mean"] > res["statistics"]["diam_px"]["b"]["mean"] + 2


def test_compare_writes_its_files(tmp_path: Path) -> None:
    a = write_pngs(tmp_path / "a", disc_set(20, seed=1))
    res = compare_sets(str(a), "sim:default", tmp_path / "out", n=20, n_boot=200)
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["discriminator"]["auc"] == pytest.approx(res["discriminator"]["auc"])
    assert list(saved["statistics"]) == list(TABLE_STATS)
    for s in saved["statistics"].values():
        assert {"mean", "sd"} <= set(s["a"]) and {"mean", "sd"} <= set(s["b"])
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| diam_frac |" in md and "ROC-AUC" in md and "resampled" in md
    with Image.open(tmp_path / "out" / "montage.png") as im:
        assert im.width > 600 and im.height > 150


def test_feature_shift_reads_level_and_spread() -> None:
    rng = np.random.default_rng(0)
    k = len(realism.FEATURE_DOC)
    a = rng.normal(0.0, 1.0, (400, k))
    b = rng.normal(0.0, 1.0, (400, k))
    b[:, 0] += 2.0  # a level shift of 2 sd in the first feature
    b[:, 1] *= 3.0  # three times the spread in the second
    b[:5, 2] = np.nan  # undefined in a few crops: read over the rest
    a[:, 3] = 7.0  # constant in A: no scale to read a shift in, left out
    sh = realism.feature_shift(a, b)
    names = list(realism.FEATURE_DOC)
    assert sh[names[0]]["d"] == pytest.approx(2.0, abs=0.2) and sh[names[0]]["sd_ratio"] == pytest.approx(1.0, abs=0.15)
    assert sh[names[1]]["sd_ratio"] == pytest.approx(3.0, abs=0.4) and abs(sh[names[1]]["d"]) < 0.4
    assert np.isfinite(sh[names[2]]["d"]) and names[3] not in sh


def test_repeated_discriminator_readings(tmp_path: Path) -> None:
    # two draws of one preset: readings near chance that move with the subsample and the folds
    a = "sim:default"
    one = compare_sets(a, "sim:default", tmp_path / "one", n=32, n_boot=50)
    res = compare_sets(a, "sim:default", tmp_path / "out", n=32, n_boot=50, repeats=4)
    r = res["discriminator"]["repeats"]
    # the first reading is the reported one; the others subsample B and split the folds anew
    assert r["n"] == 4 and len(r["auc"]) == 4 and r["auc"][0] == res["discriminator"]["auc"] == one["discriminator"]["auc"]
    assert min(r["auc"]) <= r["mean"] <= max(r["auc"]) and r["sd"] == pytest.approx(np.std(r["auc"], ddof=1))
    assert len(set(r["auc"])) > 1 and "repeats" not in one["discriminator"]
    assert "over 4 subsamples" in (tmp_path / "out" / "compare.md").read_text()
    with pytest.raises(ConfigError, match="repeats"):
        compare_sets(a, "sim:default", tmp_path / "bad", n=32, repeats=0)


def test_direction_summary_is_circular() -> None:
    s = realism._summary(np.array([170.0, -170.0, 175.0, -175.0]), angle=True)
    assert abs(abs(s["mean"]) - 180) < 1 and s["sd"] < 10
    assert realism._within(s, {"mean": -179.0, "sd": 1.0}, angle=True) is True


def test_cli_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_pngs(tmp_path / "a", disc_set(12, seed=1))
    b = write_pngs(tmp_path / "b", disc_set(12, seed=2, diameter=30.0))
    assert main(["data", "compare", str(a), str(b), "--n", "12", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "| diam_px |" in out and "ROC-AUC" in out and str(tmp_path / "o" / "montage.png") in out
    assert "not needed" in out


@pytest.mark.parametrize("case", ["missing", "empty", "one-image", "wrong-size", "bad-preset"])
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_pngs(tmp_path / "good", disc_set(6, seed=1))
    bad = tmp_path / "bad"
    bad.mkdir()
    spec = str(bad)
    if case == "missing":
        spec = str(tmp_path / "nope")
    elif case == "one-image":
        write_pngs(bad, disc_set(1, seed=1))
    elif case == "wrong-size":
        write_pngs(bad, disc_set(5, seed=1) + [np.zeros((40, 70), np.uint8)])
    elif case == "bad-preset":
        spec = "sim:nope"
    assert main(["data", "compare", str(good), spec, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lymphosort: error:") and "\n" not in err
    assert not (tmp_path / "o").exists()

"""Lab image loading: formats, bit depths, layouts, geometry modes, bad files, real crops."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lymphosort.data.folder import FolderData, FolderDataError, load_folder, read_image
from lymphosort.errors import DatasetNotFoundError, LymphosortError

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "brightfield"


def _const16(path: Path, value: int, shape: tuple[int, int] = (10, 12), fmt: str = "PNG") -> Path:
    Image.fromarray(np.full(shape, value, np.uint16)).save(path, fmt)
    return path


def _grey(path: Path, value: int, shape: tuple[int, int] = (10, 12)) -> Path:
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


def _load(path: Path, **kw: object) -> FolderData:
    return load_folder(path, progress=False, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"), [(65535, 255), (32896, 128), (0, 0), (257, 1), (128, 0), (129, 1)]
)
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_scales_by_257(tmp_path: Path, value: int, expected: int, fmt: str) -> None:
    p = _const16(tmp_path / f"a.{fmt.lower()}", value, fmt=fmt)
    assert Image.open(p).mode.startswith("I;16")  # the case the rule is for
    out = read_image(p, size=8)
    assert out.dtype == np.uint8 and out.shape == (8, 8)
    assert np.all(out == expected)


def test_16bit_scaling_is_linear(tmp_path: Path) -> None:
    ramp = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "r.png")
    out = read_image(tmp_path / "r.png", size=16, mode="center-crop")
    np.testing.assert_array_equal(out.ravel(), np.arange(256))


def test_32bit_tiff_uses_bits_per_sample(tmp_path: Path) -> None:
    Image.fromarray(np.full((6, 6), 2**31 - 1, np.int32)).save(tmp_path / "m.tif")
    # mode I with BitsPerSample 32: 2**31 - 1 is half the 32-bit range -> 127.5
    assert Image.open(tmp_path / "m.tif").mode == "I"
    assert np.all(np.abs(read_image(tmp_path / "m.tif", size=6).astype(int) - 128) <= 1)


def test_colour_modes_to_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # pure red: luma 0.299 * 200 = 59.8
    Image.fromarray(rgb).save(tmp_path / "red.png")
    Image.fromarray(np.dstack([rgb, np.full((8, 8), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([np.full((8, 8), 90, np.uint8)] * 2), mode="LA").save(tmp_path / "la.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    assert np.all(read_image(tmp_path / "red.png", 8) == 60)
    assert np.all(read_image(tmp_path / "rgba.png", 8) == 60)  # alpha dropped, not composited
    assert np.all(read_image(tmp_path / "la.png", 8) == 90)
    assert np.all(np.abs(read_image(tmp_path / "p.png", 8).astype(int) - 60) <= 2)


def test_jpeg_and_bmp_read(tmp_path: Path) -> None:
    Image.fromarray(np.full((9, 9, 3), 120, np.uint8)).save(tmp_path / "a.jpg", quality=95)
    _grey(tmp_path / "b.bmp", 33)
    assert np.all(np.abs(read_image(tmp_path / "a.jpg", 9).astype(int) - 120) <= 2)
    assert np.all(read_image(tmp_path / "b.bmp", 9) == 33)


def test_resize_mode_keeps_aspect_and_centre(tmp_path: Path) -> None:
    # 30 wide x 10 high: 0 on the left, 200 on the right, a 6-px stripe of 100 centred.
    a = np.zeros((10, 30), np.uint8)
    a[:, 15:] = 200
    a[:, 12:18] = 100
    Image.fromarray(a).save(tmp_path / "wide.png")
    out = read_image(tmp_path / "wide.png", size=5, mode="resize")
    # shorter side 10 -> 5 (x0.5) gives 15x5; the centre 5 columns are original 10..19:
    # the middle one sees only the stripe, the outer ones mix it with 0 and 200.
    assert out.shape == (5, 5)
    assert np.all(out == out[0])  # vertical content unchanged
    assert out[0, 0] < out[0, 2] < out[0, 4]
    assert out[0, 2] == 100


def test_resize_mode_upscales_small_images(tmp_path: Path) -> None:
    _grey(tmp_path / "s.png", 77, (4, 6))
    out = read_image(tmp_path / "s.png", size=16)
    assert out.shape == (16, 16) and np.all(out == 77)


def test_center_crop_mode_crops_and_pads(tmp_path: Path) -> None:
    a = np.arange(6 * 10, dtype=np.uint8).reshape(6, 10)  # 6 high, 10 wide
    Image.fromarray(a).save(tmp_path / "c.png")
    out = read_image(tmp_path / "c.png", size=8, mode="center-crop")
    # width 10 -> columns 1..8; height 6 -> padded by one edge row above and below
    np.testing.assert_array_equal(out[1:7], a[:, 1:9])
    np.testing.assert_array_equal(out[0], a[0, 1:9])
    np.testing.assert_array_equal(out[7], a[5, 1:9])


def _make_tree(root: Path) -> None:
    (root / "B").mkdir(parents=True)
    (root / "T4" / "day2").mkdir(parents=True)
    _grey(root / "B" / "b1.png", 10, (70, 64))
    Image.fromarray(np.full((64, 80, 3), 50, np.uint8)).save(root / "B" / "b2.jpeg", quality=95)
    _const16(root / "T4" / "t1.png", 65535, (64, 64))
    _const16(root / "T4" / "day2" / "t2.TIF", 32896, (66, 64), fmt="TIFF")
    Image.fromarray(np.full((64, 64, 4), 90, np.uint8)).save(root / "T4" / "t3.png")
    # bad files
    good = (root / "B" / "b1.png").read_bytes()
    (root / "B" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "B" / "notes.png").write_text("this is not an image\n")
    (root / "T4" / "empty.tif").write_bytes(b"")
    # passed over
    (root / "B" / "readme.txt").write_text("x")
    (root / "T4" / "raw.npy").write_bytes(b"\x93NUMPY")
    _grey(root / "B" / ".hidden.png", 1)
    (root / ".cache").mkdir()
    _grey(root / ".cache" / "c.png", 1)


def test_subfolders_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _make_tree(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lymphosort.data.folder"):
        d = _load(tmp_path)
    assert d.classes == ("B", "T4")
    assert d.images.dtype == torch.uint8 and d.images.shape == (5, 64, 64)
    assert d.labels.dtype == torch.int64
    by_name = {p.name: (int(lab), d.images[i]) for i, (p, lab) in enumerate(zip(d.paths, d.labels))}
    assert set(by_name) == {"b1.png", "b2.jpeg", "t1.png", "t2.TIF", "t3.png"}
    assert by_name["b1.png"][0] == 0 and by_name["t2.TIF"][0] == 1
    assert torch.all(by_name["b1.png"][1] == 10)
    assert torch.all(by_name["t1.png"][1] == 255)
    assert torch.all(by_name["t2.TIF"][1] == 128)
    assert torch.all(by_name["t3.png"][1] == 90)
    assert torch.all((by_name["b2.jpeg"][1].int() - 50).abs() <= 2)

    reasons = {p.name: r for p, r in d.skipped}
    assert set(reasons) == {"truncated.png", "notes.png", "empty.tif"}
    assert "truncated" in reasons["truncated.png"]
    assert "not a PNG/TIFF/JPEG/BMP image" in reasons["notes.png"]
    assert "empty" in reasons["empty.tif"]
    assert sorted(p.name for p in d.ignored) == ["raw.npy", "readme.txt"]
    assert "skipped 3 file(s)" in caplog.text
    assert d.provenance["source"] == "folder" and d.provenance["path"] == str(tmp_path.resolve())
    assert d.provenance["n_skipped"] == 3 and d.provenance["n_ignored"] == 2
    assert len(d) == 5


def test_subfolders_with_given_classes(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    (tmp_path / "junk").mkdir()
    _grey(tmp_path / "junk" / "j.png", 3)
    d = _load(tmp_path, classes=("T8", "T4", "B"))
    assert d.classes == ("T8", "T4", "B")  # order given; T8 has no folder but keeps index 0
    labels = {p.name: int(lab) for p, lab in zip(d.paths, d.labels)}
    assert labels["b1.png"] == 2 and labels["t1.png"] == 1
    assert "j.png" not in labels


def test_image_at_top_level_is_reported(tmp_path: Path) -> None:
    (tmp_path / "B").mkdir()
    _grey(tmp_path / "B" / "b.png", 5)
    _grey(tmp_path / "loose.png", 5)
    d = _load(tmp_path)
    assert [(p.name, "class subfolder" in r) for p, r in d.skipped] == [("loose.png", True)]


def test_jpeg_with_png_extension_is_read_by_content(tmp_path: Path) -> None:
    (tmp_path / "B").mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "B" / "x.png", format="JPEG")
    d = _load(tmp_path, size=8)
    assert d.skipped == [] and torch.all((d.images.int() - 100).abs() <= 2)


def test_csv_names_ints_header_and_relative_paths(tmp_path: Path) -> None:
    _make_tree(tmp_path / "imgs")
    (tmp_path / "lists").mkdir()
    rows = [
        "path,label",
        "../imgs/B/b1.png,B",
        "../imgs/T4/t1.png,1",
        f"{(tmp_path / 'imgs' / 'T4' / 't3.png').as_posix()},T4",  # absolute path
        "",
        "../imgs/T4/day2/t2.TIF,T8",  # unknown name
        "../imgs/B/b2.jpeg,7",  # index out of range
        "../imgs/B/missing.png,B",
        "../imgs/B/notes.png,B",
        "../imgs/B/readme.txt,B",
        "only-one-column",
    ]
    csv_path = tmp_path / "lists" / "labels.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    d = _load(csv_path, classes=("B", "T4"))
    assert [p.name for p in d.paths] == ["b1.png", "t1.png", "t3.png"]
    assert d.labels.tolist() == [0, 1, 1]
    assert d.images.shape == (3, 64, 64)
    reasons = [r for _, r in d.skipped]
    assert len(reasons) == 6
    assert any("unknown label 'T8'" in r for r in reasons)
    assert any("out of range" in r for r in reasons)
    assert any("file not found" in r for r in reasons)
    assert any("not a PNG/TIFF/JPEG/BMP" in r for r in reasons)
    assert any("unsupported extension '.txt'" in r for r in reasons)
    assert any("expected 'path,label'" in r for r in reasons)
    assert d.provenance["layout"] == "csv"


def test_csv_without_header_infers_classes(tmp_path: Path) -> None:
    for name, v in [("a.png", 1), ("b.png", 2), ("c.png", 3)]:
        _grey(tmp_path / name, v, (8, 8))
    (tmp_path / "names.csv").write_text("a.png,T8\nb.png,B\nc.png,T4\n")
    d = _load(tmp_path / "names.csv", size=8)
    assert d.classes == ("B", "T4", "T8") and d.labels.tolist() == [2, 0, 1]
    (tmp_path / "ints.csv").write_text("a.png,2\nb.png,0\n")
    d = _load(tmp_path / "ints.csv", size=8)
    assert d.classes == ("0", "1", "2") and d.labels.tolist() == [2, 0]
    assert d.skipped == []


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError):
        _load(tmp_path / "nope")
    with pytest.raises(FolderDataError, match="no class subfolders"):
        _load(tmp_path)
    (tmp_path / "B").mkdir()
    with pytest.raises(FolderDataError, match="no image files found"):
        _load(tmp_path)
    (tmp_path / "B" / "bad.png").write_bytes(b"")
    with pytest.raises(LymphosortError, match="1 skipped"):
        _load(tmp_path)
    _grey(tmp_path / "B" / "ok.png", 1)
    for kw in ({"size": 0}, {"mode": "stretch"}, {"classes": ("B", "B")}, {"classes": "B"}):
        with pytest.raises(FolderDataError):
            _load(tmp_path, **kw)
    with pytest.raises(FolderDataError, match="mode F"):
        Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tif")
        read_image(tmp_path / "f.tif")


def test_frozen(tmp_path: Path) -> None:
    (tmp_path / "B").mkdir()
    _grey(tmp_path / "B" / "ok.png", 1)
    d = _load(tmp_path, size=4)
    with pytest.raises(AttributeError):
        d.classes = ("x",)  # type: ignore[misc]


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"needs ../shared: reference crops not found at {REFERENCE}")
@pytest.mark.parametrize("layout", ["subfolders", "csv"])
def test_reference_brightfield_crops(tmp_path: Path, layout: str) -> None:
    pngs = sorted(REFERENCE.glob("*.png"))
    assert len(pngs) == 20
    if layout == "subfolders":
        (tmp_path / "T4").mkdir()
        for p in REFERENCE.iterdir():  # README and LICENSE come along and must be ignored
            shutil.copy(p, tmp_path / "T4" / p.name)
        d = _load(tmp_path, classes=("B", "T4", "T8"))
        assert len(d.ignored) == len(list(REFERENCE.iterdir())) - 20
    else:
        csv_path = tmp_path / "list.csv"
        csv_path.write_text("".join(f"{p.as_posix()},T4\n" for p in pngs))
        d = _load(csv_path, classes=("B", "T4", "T8"))
    assert d.skipped == []
    assert d.images.shape == (20, 64, 64) and d.images.dtype == torch.uint8
    assert d.labels.tolist() == [1] * 20
    # grey content with a mid-grey background (about 128 or 170 per the README)
    assert 90 < float(d.images.float().mean()) < 200
    assert int(d.images.max()) > int(d.images.min())
    # equals a direct read of the same file
    i = [p.name for p in d.paths].index(pngs[0].name)
    np.testing.assert_array_equal(d.images[i].numpy(), read_image(pngs[0]))

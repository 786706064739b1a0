"""IDX reader/writer: round trips, every malformed-file path, and corruption fuzzing."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lymphosort.data.idx import IDX_DTYPES, check_pair, read_header, read_idx, write_idx
from lymphosort.errors import IDXError

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = [dt.newbyteorder("=") for dt in IDX_DTYPES.values()]


def _header(code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(shape)]) + np.asarray(shape, dtype=">u4").tobytes()


@FUZZ
@given(
    arr=st.sampled_from(DTYPES).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    ),
    gz=st.booleans(),
    mmap=st.booleans(),
)
def test_round_trip_every_dtype_and_shape(tmp_path: Path, arr: np.ndarray, gz: bool, mmap: bool) -> None:
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), arr)
    out = read_idx(path, mmap=mmap)
    assert out.shape == arr.shape
    assert out.dtype.newbyteorder("=") == arr.dtype.newbyteorder("=")
    np.testing.assert_array_equal(out, arr)  # NaNs compare equal here
    native = read_idx(path, native=True)
    assert native.dtype.isnative
    np.testing.assert_array_equal(native, arr)


def test_layout_is_big_endian_idx(tmp_path: Path) -> None:
    arr = np.array([[1, 258]], dtype=np.int32)
    raw = write_idx(tmp_path / "x", arr).read_bytes()
    assert raw == bytes([0, 0, 0x0C, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 2])


def test_mmap_returns_a_read_only_view(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.arange(12, dtype=np.int16).reshape(3, 4))
    out = read_idx(path)
    assert isinstance(out, np.memmap)
    assert not out.dtype.isnative and not out.flags.writeable
    assert read_idx(path, mmap=False).flags.writeable
    assert read_header(path) == (np.dtype(">i2"), (3, 4))


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    plain = write_idx(tmp_path / "x", arr)
    hidden = tmp_path / "no_extension"
    hidden.write_bytes(gzip.compress(plain.read_bytes()))
    np.testing.assert_array_equal(read_idx(hidden), arr)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x05", "bad magic"),
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x05", "unknown IDX dtype code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated header"),
        (_header(0x08, (2, 0)), "zero-length dimension"),
        (_header(0x0E, (0xFFFFFFFF, 0xFFFFFFFF)), "absurd shape"),
        (_header(0x08, (2, 3)) + b"\x01" * 5, "truncated body"),
        (_header(0x08, (2, 3)) + b"\x01" * 7, "trailing bytes"),
        (_header(0x0C, (2,)) + b"\x00" * 4, "truncated body"),
    ],
)
@pytest.mark.parametrize("mode", ["mmap", "memory", "gzip"])
def test_malformed_files_raise_idx_error_naming_file(tmp_path: Path, content: bytes, message: str, mode: str) -> None:
    path = tmp_path / "bad_file"
    path.write_bytes(gzip.compress(content) if mode == "gzip" else content)
    with pytest.raises(IDXError, match=message) as info:
        read_idx(path, mmap=mode == "mmap")
    assert "bad_file" in str(info.value)


def test_corrupt_gzip_stream_is_idx_error(tmp_path: Path) -> None:
    good = gzip.compress(_header(0x08, (4, 4)) + bytes(16))
    path = tmp_path / "x.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(IDXError, match="x.gz"):
        read_idx(path)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(3, dtype=np.int64), "no IDX code"),
        (np.zeros(3, dtype=np.float16), "no IDX code"),
        (np.array(5, dtype=np.uint8), "0-D"),
        (np.zeros((0, 3), dtype=np.uint8), "cannot write shape"),
    ],
)
def test_write_rejects_what_idx_cannot_hold(tmp_path: Path, array: np.ndarray, message: str) -> None:
    with pytest.raises(IDXError, match=message):
        write_idx(tmp_path / "x", array)
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


@FUZZ
@given(
    data=st.data(),
    kind=st.sampled_from(["flip", "truncate", "append", "overwrite"]),
    gz=st.booleans(),
    mmap=st.booleans(),
)
def test_corruption_gives_array_or_idx_error(tmp_path: Path, data: st.DataObject, kind: str, gz: bool, mmap: bool) -> None:
    dt = data.draw(st.sampled_from(DTYPES))
    arr = data.draw(hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)))
    raw = bytearray(write_idx(tmp_path / ("c.gz" if gz else "c"), arr).read_bytes())
    if kind == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "append":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        patch = data.draw(st.binary(min_size=1, max_size=8))
        raw[i : i + len(patch)] = patch
    path = tmp_path / "corrupt"
    path.write_bytes(bytes(raw))
    try:
        out = read_idx(path, mmap=mmap)
    except IDXError as exc:
        assert "corrupt" in str(exc)
        return
    assert isinstance(out, np.ndarray)
    # A file that still parses holds exactly the bytes its header promises.
    assert out.nbytes == int(np.prod(out.shape)) * out.dtype.itemsize > 0
    if kind in ("truncate", "append") and not gz:
        pytest.fail("a truncated or extended plain file must not parse")


def test_check_pair() -> None:
    imgs = np.zeros((4, 64, 64), np.uint8)
    labels = np.array([0, 1, 2, 1], np.uint8)
    check_pair(imgs, labels, image_size=(64, 64), num_classes=3)
    with pytest.raises(IDXError, match="4 images but .* 3 labels"):
        check_pair(imgs, labels[:3], "ti", "tl")
    with pytest.raises(IDXError, match="3-D"):
        check_pair(imgs.reshape(4, 64 * 64), labels)
    with pytest.raises(IDXError, match="1-D"):
        check_pair(imgs, labels.reshape(2, 2))
    with pytest.raises(IDXError, match="expected 32x32"):
        check_pair(imgs, labels, image_size=(32, 32))
    with pytest.raises(IDXError, match=r"0\.\.2, expected 0\.\.1"):
        check_pair(imgs, labels, num_classes=2)

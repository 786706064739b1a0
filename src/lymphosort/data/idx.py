"""IDX files (the MNIST container format): memory-mapped reads, atomic writes, strict checks.

Layout: magic ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32 sizes, then
the body in C order, big-endian. Every malformed file raises :class:`IDXError` naming the
file and the problem, so a broken download never turns into a silently wrong array.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO, Mapping

import numpy as np

from lymphosort.errors import IDXError

__all__ = ["IDX_DTYPES", "IDXError", "check_pair", "read_header", "read_idx", "write_idx"]

#: IDX dtype code -> big-endian numpy dtype.
IDX_DTYPES: Mapping[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_BY_KIND = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
#: Largest rank and body we accept: real IDX data sets are 1-4 D and a few GB; anything
#: beyond is a corrupted header, and rejecting it early avoids huge allocations.
MAX_NDIM = 16
MAX_BODY_BYTES = 1 << 40


def _header(head: bytes, name: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Parse the magic and sizes from the first bytes; returns (dtype, shape, header_len)."""
    if len(head) == 0:
        raise IDXError(f"{name}: empty file, not an IDX file")
    if len(head) < 4:
        raise IDXError(f"{name}: {len(head)} bytes, too short for the 4-byte IDX magic")
    if head[0] != 0 or head[1] != 0:
        raise IDXError(f"{name}: bad magic {head[:4].hex()} (IDX files start with 0000)")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IDXError(f"{name}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    if ndim == 0 or ndim > MAX_NDIM:
        raise IDXError(f"{name}: {ndim} dimensions in the header (expected 1 to {MAX_NDIM})")
    header_len = 4 + 4 * ndim
    if len(head) < header_len:
        raise IDXError(f"{name}: truncated header ({len(head)} of {header_len} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(head, dtype=">u4", count=ndim, offset=4))
    if any(d == 0 for d in shape):
        raise IDXError(f"{name}: zero-length dimension in shape {shape}")
    dtype = IDX_DTYPES[code]
    body = dtype.itemsize * int(np.prod(shape, dtype=object))
    if body > MAX_BODY_BYTES:
        raise IDXError(f"{name}: absurd shape {shape} ({body} bytes) in the header")
    return dtype, shape, header_len


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def read_header(path: str | os.PathLike[str]) -> tuple[np.dtype, tuple[int, ...]]:
    """Dtype and shape of an IDX file (plain or gzip) without reading its body."""
    path = Path(path)
    try:
        opener = gzip.open if _is_gzip(path) else open
        with opener(path, "rb") as fh:  # type: ignore[operator]
            head = fh.read(4 + 4 * 255)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise IDXError(f"{path}: cannot read header ({exc})") from exc
    dtype, shape, _ = _header(head, str(path))
    return dtype, shape


def _read_exact(fh: BinaryIO, n: int, name: str) -> bytearray:
    """Read exactly n bytes in chunks (a corrupt size never triggers one huge allocation)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = fh.read(min(1 << 24, n - len(buf)))
        if not chunk:
            raise IDXError(f"{name}: truncated body ({len(buf)} of {n} bytes)")
        buf += chunk
    return buf


def read_idx(path: str | os.PathLike[str], mmap: bool = True, native: bool = False) -> np.ndarray:
    """Read an IDX file.

    Plain files are memory-mapped by default (a read-only big-endian view, no copy);
    ``mmap=False`` reads into memory. Gzip files (detected by content) are always read
    into memory. ``native=True`` converts to the machine's byte order (one copy).
    """
    path = Path(path)
    name = str(path)
    try:
        gz = _is_gzip(path)
        if gz or not mmap:
            opener = gzip.open if gz else open
            with opener(path, "rb") as fh:  # type: ignore[operator]
                head = fh.read(4)
                if len(head) == 4 and head[:2] == b"\0\0":
                    head += fh.read(4 * head[3])
                dtype, shape, _ = _header(head, name)
                n = dtype.itemsize * int(np.prod(shape))
                body = _read_exact(fh, n, name)
                if fh.read(1):
                    raise IDXError(f"{name}: trailing bytes after the {n}-byte body of shape {shape}")
            arr = np.frombuffer(body, dtype=dtype).reshape(shape)
        else:
            size = path.stat().st_size
            with open(path, "rb") as fh:
                head = fh.read(4 + 4 * 255)
            dtype, shape, header_len = _header(head, name)
            n = dtype.itemsize * int(np.prod(shape))
            if size < header_len + n:
                raise IDXError(f"{name}: truncated body ({size - header_len} of {n} bytes for shape {shape})")
            if size > header_len + n:
                raise IDXError(f"{name}: {size - header_len - n} trailing bytes after the body of shape {shape}")
            arr = np.memmap(path, dtype=dtype, mode="r", offset=header_len, shape=shape)
    except IDXError:
        raise
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        # Corrupt gzip streams surface as these; name the file, not gzip's internals.
        raise IDXError(f"{name}: cannot read ({exc})") from exc
    if native and not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as IDX (gzip if the name ends in .gz), atomically via temp + rename."""
    path = Path(path)
    arr = np.asarray(array)
    code = _CODE_BY_KIND.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise IDXError(f"{path}: dtype {arr.dtype} has no IDX code (use uint8, int8, int16, int32, float32 or float64)")
    if arr.ndim == 0 or arr.ndim > MAX_NDIM:
        raise IDXError(f"{path}: cannot write a {arr.ndim}-D array (IDX needs 1 to {MAX_NDIM} dimensions)")
    if arr.size == 0 or any(d >= 1 << 32 for d in arr.shape):
        raise IDXError(f"{path}: cannot write shape {arr.shape} (sizes must be 1 .. 2**32-1)")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            if path.suffix == ".gz":
                # mtime=0 keeps the bytes reproducible for hashing.
                with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
                    fh.write(header)
                    fh.write(body)
            else:
                raw.write(header)
                raw.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_pair(
    images: np.ndarray,
    labels: np.ndarray,
    images_path: str | os.PathLike[str] = "images",
    labels_path: str | os.PathLike[str] = "labels",
    image_size: tuple[int, int] | None = None,
    num_classes: int | None = None,
) -> None:
    """Check that an images file and a labels file belong together.

    Images must be 3-D (N, H, W), labels 1-D (N,), with the same N; optionally H, W must
    equal ``image_size`` and every label must lie in ``[0, num_classes)``.
    """
    if images.ndim != 3:
        raise IDXError(f"{images_path}: images must be 3-D (N, H, W), got shape {tuple(images.shape)}")
    if labels.ndim != 1:
        raise IDXError(f"{labels_path}: labels must be 1-D (N,), got shape {tuple(labels.shape)}")
    if images.shape[0] != labels.shape[0]:
        raise IDXError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels"
        )
    if image_size is not None and tuple(images.shape[1:]) != tuple(image_size):
        raise IDXError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected "
            f"{image_size[0]}x{image_size[1]}"
        )
    if num_classes is not None:
        if labels.dtype.kind not in "iu":
            raise IDXError(f"{labels_path}: labels have dtype {labels.dtype}, expected integers")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise IDXError(f"{labels_path}: labels range {lo}..{hi}, expected 0..{num_classes - 1}")

"""Lab images: a folder of class subfolders, or a CSV of ``path,label`` rows.

Labs bring crops in whatever their microscope software writes, so this module turns
PNG/TIFF/JPEG/BMP files of any common pixel layout into the ``uint8 [N, size, size]``
tensors the rest of the package uses (see ``docs/DESIGN.md``).

Pixel rules (all linear; nothing is stretched per image, so intensities stay comparable
between files and sessions):

* 8-bit grey (``L``) is kept as is; ``1`` (bilevel) becomes 0/255.
* Colour (``RGB``, ``RGBA``, ``LA``, ``P``, ``CMYK``, ...) becomes grey by ITU-R 601-2 luma,
  ``L = 0.299 R + 0.587 G + 0.114 B`` (Pillow's ``convert("L")``); alpha is dropped, not
  composited, because crops are opaque and a transparent pixel still carries a grey level.
* Integer images deeper than 8 bits (16-bit PNG/TIFF arrive as Pillow mode ``I;16*`` or
  ``I``) are scaled by their container's full range: ``v8 = round(v * 255 / (2**bits - 1))``
  with ``bits`` = 16 for ``I;16*`` and for ``I`` unless a TIFF ``BitsPerSample`` tag says
  otherwise (e.g. 32). For 16-bit data that is ``v / 257``: 65535 -> 255, 32896 -> 128.
  A 12-bit camera image stored in a 16-bit container therefore comes out dark (at most
  16); rescale such data before loading if that matters.
* Floating-point images (mode ``F``) have no defined full range and are skipped with a
  reason rather than guessed at.
* Only the first frame of a multi-page TIFF is read; EXIF orientation is applied.

Geometry (``mode``):

* ``"resize"`` (default): scale so the shorter side equals ``size`` (aspect preserved,
  antialiased bilinear), then centre-crop the longer side.
* ``"center-crop"``: no scaling; centre-crop to ``size``, padding a too-small side by
  repeating its edge pixels (edge padding continues the background instead of adding a
  black frame the model could learn from).
"""

# a little over 400 lines: every way a lab folder is read, and every refusal
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from lymphosort.errors import DatasetNotFoundError, LymphosortError

__all__ = ["FolderData", "FolderDataError", "IMAGE_EXTENSIONS", "load_folder", "read_image"]

log = logging.getLogger(__name__)

#: File name endings read as images (lower case); anything else is ignored and counted.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"})
# Decoders Pillow may use: content decides, but only among these (a GIF named .png is refused).
_FORMATS = ("PNG", "TIFF", "JPEG", "BMP")
_HEADER_LABELS = frozenset({"label", "labels", "class", "target", "y", "category"})

ResizeMode = Literal["resize", "center-crop"]


class FolderDataError(LymphosortError, ValueError):
    """A lab folder or CSV yields no usable image (empty, or every file unreadable)."""


@dataclass(frozen=True)
class FolderData:
    """Images loaded from a lab folder or CSV, ready for the models."""

    #: uint8 [N, size, size] grey images.
    images: torch.Tensor
    #: int64 [N] indices into ``classes``.
    labels: torch.Tensor
    classes: tuple[str, ...]
    #: source file of each image, aligned with ``images``.
    paths: list[Path]
    #: files that were meant to be read but could not be, with the reason.
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    #: files passed over on purpose (unsupported extension) in a folder scan.
    ignored: list[Path] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class _Unreadable(Exception):
    """Internal: a file could not be turned into an image; the message is the reason."""


def _to_grey_array(im: Image.Image, tags: Any = None) -> np.ndarray:
    """Pillow image -> 2-D float32 array on the 0..255 scale (see the module rules).

    ``tags``: the TIFF tags of the file as opened (a transposed copy no longer has them).
    """
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.float32)
    if mode.startswith("I;16"):
        bits = 16
    elif mode == "I":
        bits = 16
        if tags is not None:
            bps = tags.get(258)  # BitsPerSample
            if isinstance(bps, tuple):
                bps = bps[0] if bps else None
            if isinstance(bps, int) and 8 < bps <= 32:
                bits = bps
    elif mode == "F":
        raise _Unreadable("floating-point pixels (mode F) have no defined range")
    else:
        try:
            return np.asarray(im.convert("L"), dtype=np.float32)
        except (ValueError, OSError) as e:
            raise _Unreadable(f"cannot convert pixel mode {mode} to grey: {e}") from e
    arr = np.asarray(im).astype(np.float64)
    arr = arr * (255.0 / (2.0**bits - 1.0))
    return np.clip(arr, 0.0, 255.0).astype(np.float32)


def _resize_float(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    # Pillow's "F" mode keeps full precision (no 8-bit rounding before the resample);
    # its bilinear filter widens its support when shrinking, i.e. it antialiases.
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))
    out = im.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32)


def _fit(arr: np.ndarray, size: int, mode: ResizeMode) -> np.ndarray:
    """2-D float array -> [size, size] following ``mode``."""
    h, w = arr.shape
    if mode == "resize":
        if (h, w) != (size, size):
            scale = size / min(h, w)
            # max(size, ...) guards against rounding the longer side below size.
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            arr = _resize_float(arr, nw, nh)
            h, w = nh, nw
    else:
        pad_h, pad_w = max(0, size - h), max(0, size - w)
        if pad_h or pad_w:
            arr = np.pad(
                arr, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)), mode="edge"
            )
            h, w = arr.shape
    top, left = (h - size) // 2, (w - size) // 2
    return arr[top : top + size, left : left + size]


def read_image(path: str | Path, size: int = 64, mode: ResizeMode = "resize") -> np.ndarray:
    """Read one image file as a uint8 [size, size] grey array (module rules).

    Raises ``FolderDataError`` with the reason when the file cannot be used.
    """
    try:
        return _read(Path(path), size, mode)
    except _Unreadable as e:
        raise FolderDataError(f"{path}: {e}") from None


def _read(path: Path, size: int, mode: ResizeMode) -> np.ndarray:
    try:
        n_bytes = path.stat().st_size
    except FileNotFoundError:
        raise _Unreadable("file not found") from None
    except OSError as e:
        raise _Unreadable(f"cannot access file: {e}") from None
    if n_bytes == 0:
        raise _Unreadable("empty file (0 bytes)")
    try:
        with Image.open(path, formats=_FORMATS) as im:
            im.load()
            tags = getattr(im, "tag_v2", None)
            arr = _to_grey_array(ImageOps.exif_transpose(im) or im, tags)
    except _Unreadable:
        raise
    except Image.UnidentifiedImageError:
        raise _Unreadable("not a PNG/TIFF/JPEG/BMP image") from None
    except Image.DecompressionBombError as e:
        raise _Unreadable(f"image too large: {e}") from None
    except PermissionError as e:
        raise _Unreadable(f"permission denied: {e}") from None
    except Exception as e:  # noqa: BLE001 - decoders raise many types; a bad file must never be fatal
        raise _Unreadable(f"truncated or corrupt image ({type(e).__name__}: {e})") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise _Unreadable(f"unexpected pixel array shape {arr.shape}")
    out = _fit(arr, size, mode)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _scan_subfolders(
    root: Path, classes: Sequence[str] | None
) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]], list[Path], tuple[str, ...]]:
    """Class subfolders -> (path, label) items, skipped, ignored, classes."""
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes_t = tuple(subdirs)
    else:
        classes_t = tuple(classes)
        missing = [c for c in classes_t if c not in subdirs]
        if missing:
            log.warning("%s: no subfolder for class(es) %s", root, ", ".join(missing))
        unused = [d for d in subdirs if d not in classes_t]
        if unused:
            log.info("%s: subfolder(s) not in classes, not loaded: %s", root, ", ".join(unused))
    index = {c: i for i, c in enumerate(classes_t)}
    items: list[tuple[Path, int]] = []
    skipped: list[tuple[Path, str]] = []
    ignored: list[Path] = []
    for f in sorted(root.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
            skipped.append((f, "image at top level, not in a class subfolder"))
    for name in subdirs:
        if name not in index:
            continue
        # Recurse: labs often nest by day or session under the class folder.
        for f in sorted((root / name).rglob("*")):
            if _is_hidden(f.relative_to(root)) or not f.is_file():
                continue
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((f, index[name]))
            else:
                ignored.append(f)
    return items, skipped, ignored, classes_t


def _parse_int(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None


def _read_csv(
    csv_path: Path, classes: Sequence[str] | None
) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]], tuple[str, ...]]:
    """CSV ``path,label`` rows -> (path, label) items, skipped, classes.

    Labels are class names or integer indices. Without ``classes``: all-integer labels give
    classes "0".."max"; otherwise the sorted distinct non-integer labels are the classes
    (and any integer labels index into them).
    """
    base = csv_path.parent
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FolderDataError(f"cannot read CSV {csv_path}: {e}") from None
    rows: list[tuple[int, list[str]]] = []
    for line_no, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        rows.append((line_no, cells))
    if rows:
        first = rows[0][1]
        # A header names its label column and its first cell is no existing file.
        if len(first) >= 2 and first[1].lower() in _HEADER_LABELS and not (base / first[0]).is_file():
            rows = rows[1:]

    skipped: list[tuple[Path, str]] = []
    parsed: list[tuple[Path, str]] = []
    for line_no, cells in rows:
        if len(cells) < 2 or not cells[0] or not cells[1]:
            skipped.append((csv_path, f"line {line_no}: expected 'path,label', got {','.join(cells)!r}"))
            continue
        p = Path(cells[0]).expanduser()
        parsed.append((p if p.is_absolute() else base / p, cells[1]))

    if classes is None:
        ints = [_parse_int(lab) for _, lab in parsed]
        if parsed and all(i is not None for i in ints):
            top = max(i for i in ints if i is not None)
            classes_t = tuple(str(i) for i in range(max(top, 0) + 1))
        else:
            classes_t = tuple(sorted({lab for (_, lab), i in zip(parsed, ints) if i is None}))
    else:
        classes_t = tuple(classes)
    index = {c: i for i, c in enumerate(classes_t)}

    items: list[tuple[Path, int]] = []
    for p, lab in parsed:
        if lab in index:  # a class name wins over an integer reading ("1" may be a name)
            items.append((p, index[lab]))
            continue
        i = _parse_int(lab)
        if i is None:
            skipped.append((p, f"unknown label {lab!r} (classes: {', '.join(classes_t)})"))
        elif not 0 <= i < len(classes_t):
            skipped.append((p, f"label index {i} out of range for {len(classes_t)} classes"))
        else:
            items.append((p, i))
    return items, skipped, classes_t


def _progress(items: list[tuple[Path, int]], enabled: bool, desc: str) -> Iterable[tuple[Path, int]]:
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is a nicety, never a requirement
        return items
    return tqdm(items, desc=desc, unit="img", leave=False)


# long by design: one pass over a lab folder: listing, label sources and every refusal read best together
def load_folder(
    path: str | Path,
    size: int = 64,
    classes: Sequence[str] | None = None,
    mode: ResizeMode = "resize",
    progress: bool = True,
) -> FolderData:
    """Load lab images from class subfolders or a ``path,label`` CSV.

    ``path`` is a directory whose subfolders name the classes (sorted, or in the order of
    ``classes``; files below a class folder are found recursively) or a CSV file of
    ``path,label`` rows (optional header; relative paths resolve against the CSV's folder;
    a label is a class name or an integer index). With ``classes`` given, subfolders not
    named in it are not loaded, and labels keep their index in ``classes`` even when a
    class has no images.

    Unreadable files and unknown labels never stop the load: they are listed in
    ``skipped`` with a reason and a warning gives their count. Hidden files are passed
    over; files with other extensions in a folder scan go to ``ignored``.

    Raises ``DatasetNotFoundError`` if ``path`` does not exist and ``FolderDataError`` if
    nothing could be loaded or the arguments are invalid.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise FolderDataError(f"size must be a positive integer, got {size!r}")
    if mode not in ("resize", "center-crop"):
        raise FolderDataError(f"mode must be 'resize' or 'center-crop', got {mode!r}")
    if classes is not None:
        if isinstance(classes, str):
            raise FolderDataError("classes must be a sequence of names, not one string")
        if len(set(classes)) != len(classes) or not classes:
            raise FolderDataError(f"classes must be non-empty and distinct, got {tuple(classes)}")
    root = Path(path).expanduser()
    if not root.exists():
        raise DatasetNotFoundError(f"image folder or CSV not found: {root}")

    ignored: list[Path] = []
    if root.is_dir():
        layout = "subfolders"
        items, skipped, ignored, classes_t = _scan_subfolders(root, classes)
        if not classes_t:
            raise FolderDataError(
                f"{root} has no class subfolders: put each class's images in a subfolder "
                "named after the class (e.g. B/, T4/, T8/), or pass a path,label CSV"
            )
    else:
        layout = "csv"
        items, skipped, classes_t = _read_csv(root, classes)

    images: list[np.ndarray] = []
    labels: list[int] = []
    paths: list[Path] = []
    for f, label in _progress(items, progress, f"reading {root.name}"):
        if layout == "csv" and f.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((f, f"unsupported extension {f.suffix or '(none)'!r}"))
            continue
        try:
            images.append(_read(f, size, mode))
        except _Unreadable as e:
            skipped.append((f, str(e)))
            continue
        labels.append(label)
        paths.append(f)

    if skipped:
        shown = "; ".join(f"{p.name}: {r}" for p, r in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        log.warning("%s: skipped %d file(s): %s%s", root, len(skipped), shown, more)
    if ignored:
        log.info("%s: ignored %d file(s) with unsupported extensions", root, len(ignored))
    if not images:
        why = f"{len(skipped)} skipped" if skipped else "no image files found"
        first = f"; first: {skipped[0][0].name}: {skipped[0][1]}" if skipped else ""
        raise FolderDataError(
            f"no readable image in {root} ({why}; readable: {', '.join(sorted(IMAGE_EXTENSIONS))}){first}"
        )

    provenance: dict[str, Any] = {
        "source": "folder",
        "path": str(root.resolve()),
        "layout": layout,
        "mode": mode,
        "size": size,
        "classes": list(classes_t),
        "n_images": len(images),
        "n_skipped": len(skipped),
        "n_ignored": len(ignored),
    }
    return FolderData(
        images=torch.from_numpy(np.stack(images)),
        labels=torch.tensor(labels, dtype=torch.int64),
        classes=classes_t,
        paths=paths,
        skipped=skipped,
        ignored=ignored,
        provenance=provenance,
    )

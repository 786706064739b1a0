"""Where LymphoMNIST's files live on disk and how one IDX pair is validated.

Shared by lymphomnist.py (reading) and download.py (installing), so neither imports the
other's internals: download -> layout <- lymphomnist, and lymphomnist -> download only for
the drop-in dataset's ``download=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lymphosort.data.idx import check_pair, read_idx
from lymphosort.data.info import CLASSES, INFO
from lymphosort.errors import IDXError

__all__ = ["PROVENANCE_FILE", "dataset_folder", "file_names", "missing_files", "official_count", "raw_files",
           "raw_folder", "read_pair"]

PROVENANCE_FILE = "provenance.json"


def dataset_folder(root: str | os.PathLike[str]) -> Path:
    """``ROOT/LymphoMNIST``: holds ``raw/`` and, for simulated data, ``provenance.json``."""
    return Path(root).expanduser() / str(INFO["name"])


def raw_folder(root: str | os.PathLike[str]) -> Path:
    """``ROOT/LymphoMNIST/raw``, where the four IDX files live."""
    return dataset_folder(root) / "raw"


def file_names() -> dict[str, str]:
    return dict(INFO["files"])  # type: ignore[call-overload]


def raw_files(root: str | os.PathLike[str]) -> dict[str, Path]:
    """Key (``train_images`` ...) -> path on disk; a ``.gz`` sibling is used if present alone."""
    folder = raw_folder(root)
    out = {}
    for key, name in file_names().items():
        path = folder / name
        gz = folder / f"{name}.gz"
        out[key] = gz if not path.exists() and gz.exists() else path
    return out


def missing_files(root: str | os.PathLike[str]) -> list[Path]:
    return [p for p in raw_files(root).values() if not p.is_file()]


def official_count(which: str) -> int:
    return int(INFO[f"n_{which}"])  # type: ignore[call-overload]


def read_pair(
    images_path: Path, labels_path: Path, which: str, validate_official: bool, mmap: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (images, labels) of one IDX pair; `validate_official` also checks N against
    INFO's official counts."""
    images = read_idx(images_path, mmap=mmap)
    labels = read_idx(labels_path, mmap=mmap)
    if images.dtype != np.uint8:
        raise IDXError(f"{images_path}: images have dtype {images.dtype}, expected uint8")
    check_pair(images, labels, images_path, labels_path, image_size=tuple(INFO["image_size"]), num_classes=len(CLASSES))  # type: ignore[arg-type]
    if validate_official and len(labels) != official_count(which):
        raise IDXError(
            f"{images_path}: {len(labels)} {which} images, but the official LymphoMNIST {which} file has "
            f"{official_count(which)} (a subset or simulated set needs provenance.json saying so)"
        )
    return images, labels

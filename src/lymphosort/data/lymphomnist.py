"""LymphoMNIST: a drop-in ``LymphoMNIST`` dataset plus fast whole-split loading.

Files live where the original package keeps them, ``ROOT/LymphoMNIST/raw/{train,test}_
{images,labels}`` (IDX, no extension; ``.gz`` siblings are read too), so existing downloads
are reused. Every fact (classes, names, counts, tasks, splits) comes from :mod:`.info`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lymphosort.data.layout import PROVENANCE_FILE, dataset_folder, file_names, missing_files, raw_files, raw_folder, read_pair
from lymphosort.data.info import CLASSES, MIRROR_ENV, SPLITS, TASKS, SplitSpec, TaskView, task_view
from lymphosort.errors import ConfigError, DatasetNotFoundError

__all__ = [
    "LymphoMNIST",
    "SplitData",
    "dataset_folder",
    "download",
    "load_split",
    "raw_files",
    "raw_folder",
    "read_provenance",
    "read_raw",
    "split_indices",
    "task_labels",
]

Split = Literal["train", "val", "test"]
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def how_to_get(root: str | os.PathLike[str]) -> str:
    """The ways to get the files, as one clause (shared by errors and ``data info``)."""
    names = ", ".join(file_names().values())
    return (
        f"download them with `lymphosort data download --root {root}` (or download=True), "
        f"pass a mirror with --mirror URL_OR_PATH or {MIRROR_ENV}, place {names} (IDX, optionally .gz) "
        f"in {raw_folder(root)} by hand, or generate LymphoSim data with `lymphosort data synth --root {root}`"
    )


def not_found_message(root: str | os.PathLike[str], missing: Sequence[Path] | None = None) -> str:
    """One sentence: what is missing and the ways to get it."""
    missing = missing_files(root) if missing is None else missing
    return f"LymphoMNIST files not found ({', '.join(p.name for p in missing)} missing): {how_to_get(root)}"


def read_provenance(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Where the data came from: the simulator's ``provenance.json``, else ``{"source": "real"}``."""
    path = dataset_folder(root) / PROVENANCE_FILE
    if not path.is_file():
        return {"source": "real"}
    try:
        prov = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable provenance ({exc})") from exc
    if not isinstance(prov, dict) or not isinstance(prov.get("source"), str):
        raise ConfigError(f"{path}: provenance must be a JSON object with a 'source' string")
    if prov.get("generator") == "LymphoSim":
        _warn_if_other_simulator(str(path), str(prov.get("version")))
    return prov


@functools.lru_cache(maxsize=None)  # once per data set and version, not on every read
def _warn_if_other_simulator(path: str, version: str) -> None:
    from lymphosort.data.synth.presets import SIM_VERSION

    if version != SIM_VERSION:
        logging.getLogger(__name__).warning(
            "%s: rendered by LymphoSim %s, this lymphosort renders %s; results will not match "
            "BENCHMARKS.md. Rewrite it with `lymphosort data synth --root ROOT` (ROOT holds LymphoMNIST/).",
            path, version, SIM_VERSION,
        )


def read_raw(
    root: str | os.PathLike[str],
    train: bool,
    *,
    validate_official: bool | None = None,
    mmap: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (images uint8 [N,64,64], labels [N]) of one file pair, memory-mapped.

    ``validate_official`` (default: only for real data, as simulated sets may have any size)
    also checks N against the official counts in INFO.
    """
    missing = missing_files(root)
    if missing:
        raise DatasetNotFoundError(not_found_message(root, missing))
    which = "train" if train else "test"
    files = raw_files(root)
    if validate_official is None:
        validate_official = read_provenance(root).get("source") == "real"
    return read_pair(files[f"{which}_images"], files[f"{which}_labels"], which, validate_official, mmap)


def split_indices(labels: np.ndarray, spec: SplitSpec) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified (val, test) rows of the official test file, each sorted.

    Computed on the on-disk 3-class labels, so every task view shares one split.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(spec.seed)
    val, test = [], []
    for c in range(len(CLASSES)):  # fixed class order keeps the random stream reproducible
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(np.floor(len(rows) * spec.val_fraction + 0.5))
        val.append(rows[:n_val])
        test.append(rows[n_val:])
    return np.sort(np.concatenate(val)), np.sort(np.concatenate(test))


def task_labels(labels: np.ndarray, task: str | TaskView) -> tuple[np.ndarray, np.ndarray]:
    """Apply a task view to on-disk labels: (kept positions, int64 task labels).

    A lookup table (on-disk label -> task label, -1 = dropped) maps every label in one
    vectorised step; labels absent from ``label_map`` are dropped.
    """
    view = task_view(task) if isinstance(task, str) else task
    lut = np.full(len(CLASSES), -1, dtype=np.int64)
    for disk, new in view.label_map.items():
        lut[disk] = new
    mapped = lut[np.asarray(labels).astype(np.intp)]
    keep = np.flatnonzero(mapped >= 0)
    return keep, mapped[keep]


def labels_hash(train_labels: np.ndarray, test_labels: np.ndarray) -> str:
    """Short content hash of both label files (dtype-independent)."""
    h = hashlib.sha256()
    for tag, labels in (("train", train_labels), ("test", test_labels)):
        h.update(tag.encode())
        h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return h.hexdigest()[:8]


def _spec(split_version: str) -> SplitSpec:
    try:
        return SPLITS[split_version]
    except KeyError:
        raise ConfigError(f"unknown split version {split_version!r}; choose one of {', '.join(SPLITS)}") from None


@dataclass(frozen=True)
class SplitData:
    """One split of one task, whole, as tensors."""

    images: torch.Tensor  #: uint8 [N, 64, 64]
    labels: torch.Tensor  #: int64 [N] task labels
    classes: tuple[str, ...]
    task: str
    split: str
    #: ``<spec id>-<hash of both label files>``: shared by train/val/test of one data set.
    split_id: str
    provenance: dict[str, Any] = field(default_factory=dict)
    #: rows of the source IDX file (train file for "train", test file otherwise).
    indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _split_rows(
    root: str | os.PathLike[str], split: str, split_version: str, validate_official: bool | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, dict[str, Any]]:
    """(source images memmap, rows, on-disk labels of rows, split_id, provenance); no pixels read."""
    if split not in SPLIT_NAMES:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
    spec = _spec(split_version)
    prov = read_provenance(root)
    official = prov.get("source") == "real" if validate_official is None else validate_official
    tr_img, tr_lab = read_raw(root, True, validate_official=official)
    te_img, te_lab = read_raw(root, False, validate_official=official)
    split_id = f"{spec.id}-{labels_hash(tr_lab, te_lab)}"
    if split == "train":
        images, labels, rows = tr_img, np.asarray(tr_lab), np.arange(len(tr_lab))
    else:
        val, test = split_indices(te_lab, spec)
        images, rows = te_img, (val if split == "val" else test)
        labels = np.asarray(te_lab)[rows]
    return images, rows, labels, split_id, prov


def load_split(
    root: str | os.PathLike[str],
    split: str = "train",
    task: str = "3-class",
    split_version: str = "v1",
    *,
    validate_official: bool | None = None,
) -> SplitData:
    """A whole split as tensors, without per-item PIL: memory-mapped read, one copy.

    ``train`` is the official train file; ``val``/``test`` are the seeded stratified split
    ``SPLITS[split_version]`` of the official test file; ``task`` (see ``info.TASKS``) then
    drops/remaps labels.
    """
    view = task_view(task)
    images, rows, disk_labels, split_id, prov = _split_rows(root, split, split_version, validate_official)
    keep, mapped = task_labels(disk_labels, view)
    rows = rows[keep]
    src = np.asarray(images)  # plain ndarray view of the map
    pixels = np.array(src) if len(rows) == len(src) else src[rows]
    return SplitData(
        images=torch.from_numpy(pixels),
        labels=torch.from_numpy(mapped),
        classes=tuple(view.classes),
        task=view.name,
        split=split,
        split_id=split_id,
        provenance=prov,
        indices=torch.from_numpy(rows.astype(np.int64)),
    )


def download(root: str | os.PathLike[str], mirrors: str | Sequence[str] | None = None, **kwargs: Any) -> Path:
    """Fetch LymphoMNIST into ``ROOT/LymphoMNIST/raw``; see :func:`lymphosort.data.download.download`."""
    from lymphosort.data.download import download as _download

    return _download(root, mirrors, **kwargs)


class LymphoMNIST(Dataset):
    """Drop-in for the original ``LymphoMNIST`` dataset (no torchvision needed).

    Items are ``(PIL 'L' image, int)``; ``num_classes=3`` gives B=0, T4=1, T8=2 and
    ``num_classes=2`` merges T4 and T8 into T=1 (the ``t-vs-b`` task view).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        train: bool = True,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        download: bool = False,
        num_classes: int = 3,
    ) -> None:
        views = {3: TASKS["3-class"], 2: TASKS["t-vs-b"]}
        if num_classes not in views:
            raise ConfigError(f"num_classes must be 2 or 3, got {num_classes!r}")
        self.root = os.path.expanduser(os.fspath(root))
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        self.num_classes = num_classes
        self.task = views[num_classes].name
        self.classes: list[str] = list(views[num_classes].classes)
        if download and not self._check_exists():
            self.download()
        if not self._check_exists():
            raise DatasetNotFoundError(not_found_message(self.root))
        images, labels = read_raw(self.root, train)
        keep, mapped = task_labels(labels, views[num_classes])
        src = np.asarray(images)
        self.data: torch.Tensor = torch.from_numpy(np.array(src) if len(keep) == len(src) else src[keep])
        self.targets: torch.Tensor = torch.from_numpy(mapped)

    @property
    def raw_folder(self) -> str:
        return str(raw_folder(self.root))

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def _check_exists(self) -> bool:
        return not missing_files(self.root)

    def download(self) -> None:
        download(self.root)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from PIL import Image

        img: Any = Image.fromarray(self.data[index].numpy())  # 2-D uint8 -> mode 'L'
        target: Any = int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __repr__(self) -> str:
        split = "Train" if self.train else "Test"
        return (
            f"Dataset LymphoMNIST\n    Number of datapoints: {len(self)}\n    Root location: {self.root}\n"
            f"    Split: {split}\n    Classes: {self.classes}"
        )

"""The data of a transfer: a task's shot pool, validation and test sets (LymphoMNIST or a lab's
folder), and the seeded K-per-class shots drawn from the pool."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from lymphosort.data.lymphomnist import SplitData
from lymphosort.errors import ConfigError

__all__ = ["TransferData", "cap", "draw_shots", "folder_data", "lymphomnist_data", "parse_shots", "shots_name", "subset"]

#: Folder split (per class): fractions for test and validation; the rest is the shot pool.
FOLDER_TEST_FRAC, FOLDER_VAL_FRAC = 0.3, 0.2



#: Smallest class a lab folder may have: 1 shot + 1 validation + 1 test image.
FOLDER_MIN_PER_CLASS = 3


@dataclass(frozen=True)
class TransferData:
    """Where shots come from (`pool`), the validation set and the test set of one task."""

    pool: SplitData
    val: SplitData
    test: SplitData
    task: str
    classes: tuple[str, ...]
    #: "lymphomnist" (data_root splits) or "folder" (a lab folder split here).
    source: str
    #: how validation was chosen, for the report.
    validation: str
    data_root: str | None = None


def subset(data: SplitData, pos: np.ndarray | Sequence[int], split: str | None = None) -> SplitData:
    """Rows `pos` of a split (source rows in `indices` follow them)."""
    ix = torch.as_tensor(np.asarray(pos, dtype=np.int64))
    return dataclasses.replace(
        data,
        images=data.images[ix],
        labels=data.labels[ix],
        indices=data.indices[ix] if len(data.indices) else ix,
        split=split or data.split,
    )


def cap(data: SplitData, n: int | None, seed: int = 0) -> SplitData:
    """A seeded, class-stratified subset of at most `n` rows (validation on 2 CPU cores)."""
    if n is None or len(data) <= n:
        return data
    labels = data.labels.numpy()
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        keep.append(rng.permutation(rows)[: max(1, round(n * len(rows) / len(labels)))])
    return subset(data, np.sort(np.concatenate(keep)))


def lymphomnist_data(data_root: str | os.PathLike[str], task: str, split_version: str = "v1") -> TransferData:
    """Pool = train split, validation = val split, test = test split (all of `task`)."""
    from lymphosort.data.info import task_view
    from lymphosort.data.lymphomnist import load_split

    view = task_view(task)
    return TransferData(
        pool=load_split(data_root, "train", task, split_version),
        val=load_split(data_root, "val", task, split_version),
        test=load_split(data_root, "test", task, split_version),
        task=task,
        classes=tuple(view.classes),
        source="lymphomnist",
        validation="val split (part of the official test file; shots come from the train file)",
        data_root=str(data_root),
    )


def folder_data(
    path: str | os.PathLike[str], classes: Sequence[str] | None = None, split_seed: int = 0, size: int = 64
) -> TransferData:
    """A lab folder (class subfolders or CSV) split per class into pool / val / test.

    The split depends only on the files and `split_seed` (not on the shot seed), so every
    K and seed of a curve is tested on the same images. Tiny classes are refused with a
    message that says how many images are needed.
    """
    from lymphosort.data.folder import FolderDataError, load_folder

    fd = load_folder(path, size=size, classes=classes, progress=False)
    labels = fd.labels.numpy()
    counts = {c: int((labels == i).sum()) for i, c in enumerate(fd.classes)}
    small = {c: n for c, n in counts.items() if n < FOLDER_MIN_PER_CLASS}
    if len(fd.classes) < 2:
        raise FolderDataError(f"{path}: need at least two class subfolders, found {list(fd.classes)}")
    if small:
        raise FolderDataError(
            f"{path}: too few images in class(es) {small}; each class needs at least {FOLDER_MIN_PER_CLASS} "
            "(1 shot, 1 validation, 1 test) and realistically 20 or more for a meaningful report"
        )
    rng = np.random.default_rng(split_seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for i in range(len(fd.classes)):
        rows = rng.permutation(np.flatnonzero(labels == i))
        n_test = max(1, int(round(len(rows) * FOLDER_TEST_FRAC)))
        n_val = max(1, int(round(len(rows) * FOLDER_VAL_FRAC)))
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test : n_test + n_val])
        parts["train"].append(rows[n_test + n_val :])
    h = hashlib.sha256()
    for p_, lab in zip(fd.paths, labels.tolist()):
        h.update(f"{p_.name}:{lab};".encode())
    split_id = f"folder-{h.hexdigest()[:8]}-s{split_seed}"
    whole = SplitData(
        images=fd.images,
        labels=fd.labels,
        classes=tuple(fd.classes),
        task="folder",
        split="all",
        split_id=split_id,
        provenance={**fd.provenance, "split_seed": split_seed},
        indices=torch.arange(len(fd), dtype=torch.int64),
    )
    made = {k: subset(whole, np.sort(np.concatenate(v)), split=k) for k, v in parts.items()}
    return TransferData(
        pool=made["train"],
        val=made["val"],
        test=made["test"],
        task="folder",
        classes=tuple(fd.classes),
        source="folder",
        validation=(
            f"{FOLDER_VAL_FRAC:.0%} of each class of the folder (test {FOLDER_TEST_FRAC:.0%}, rest = shot pool), "
            f"seeded split {split_seed}"
        ),
    )


def parse_shots(value: str | int | None) -> int | None:
    """'all' (or None) -> None; otherwise a positive count per class."""
    if value is None or (isinstance(value, str) and value.lower() == "all"):
        return None
    k = int(value)
    if k < 1:
        raise ConfigError(f"shots must be >= 1 or 'all', got {value!r}")
    return k


def shots_name(k: int | None) -> str:
    return "all" if k is None else str(k)


def draw_shots(labels: np.ndarray | torch.Tensor, k: int | None, seed: int, num_classes: int) -> np.ndarray:
    """Sorted positions of `k` examples of every class (class-balanced), or all when k is None.

    Each class draws from its own seeded stream, so the K=5 shots of a seed are the first
    five of its K=10 shots (nested curves, less noise between K).
    """
    labels = np.asarray(labels)
    if k is None:
        return np.arange(len(labels))
    picks = []
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        if len(rows) < k:
            raise ConfigError(f"class {c} has only {len(rows)} examples in the shot pool; cannot draw {k} shots")
        rng = np.random.default_rng([seed, c])
        picks.append(rng.permutation(rows)[:k])
    return np.sort(np.concatenate(picks))

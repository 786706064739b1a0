"""The single source of truth for LymphoMNIST metadata (MedMNIST style).

Everything that names a class, a label, a file, a count, a task view or a split reads it
from here; nothing else in the package re-declares these facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

#: On-disk labels, as in the original LymphoMNIST package.
CLASSES: tuple[str, ...] = ("B", "T4", "T8")

INFO: Mapping[str, object] = MappingProxyType(
    {
        "name": "LymphoMNIST",
        "description": (
            "Bright-field 64x64 grey crops of human B, CD4+ (T4) and CD8+ (T8) lymphocytes "
            "flowing in a microfluidic channel."
        ),
        "classes": CLASSES,
        "image_size": (64, 64),
        "n_train": 64_000,
        "n_test": 16_000,
        # Files under ROOT/LymphoMNIST/raw/, names as the original package expects them.
        "files": {
            "train_images": "train_images",
            "train_labels": "train_labels",
            "test_images": "test_images",
            "test_labels": "test_labels",
        },
        # The original package's published link (a Dropbox folder shared as a zip).
        "mirrors": (
            "https://www.dropbox.com/scl/fo/nsk5xah661jxhp7meftov/h?rlkey=bt1wk4b9djfl2uzj8brf7le43&dl=1",
        ),
        "license": "see the LymphoMNIST authors' release",
        "citation": "Khayrul Islam et al., LymphoMNIST (2024); LymphoML / KD4FPGA.",
    }
)

#: Default data roots: LymphoSim (the embedded default every command reads unless told
#: otherwise) and where `lymphosort data download` puts the real set.
DEFAULT_ROOT = "data/lymphosim"
DEFAULT_REAL_ROOT = "data/lymphomnist"

#: Environment variable with extra mirrors (URL or local path; several separated by ';').
MIRROR_ENV = "LYMPHOSORT_MIRROR"


@dataclass(frozen=True)
class TaskView:
    """A task over the on-disk labels: which on-disk labels it keeps and what they become."""

    name: str
    classes: tuple[str, ...]
    #: on-disk label -> task label; on-disk labels absent here are dropped.
    label_map: Mapping[int, int]
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


TASKS: Mapping[str, TaskView] = MappingProxyType(
    {
        "t4-vs-b": TaskView("t4-vs-b", ("B", "T"), MappingProxyType({0: 0, 1: 1}), "B=0, T4=1; T8 dropped"),
        "t8-vs-b": TaskView("t8-vs-b", ("B", "T"), MappingProxyType({0: 0, 2: 1}), "B=0, T8=1; T4 dropped"),
        "t-vs-b": TaskView("t-vs-b", ("B", "T"), MappingProxyType({0: 0, 1: 1, 2: 1}), "B=0, T4 and T8 merged to T=1"),
        "3-class": TaskView("3-class", CLASSES, MappingProxyType({0: 0, 1: 1, 2: 2}), "B=0, T4=1, T8=2 as on disk"),
    }
)


@dataclass(frozen=True)
class SplitSpec:
    """A fixed, versioned train/val/test split. Every result names its split by `id`."""

    id: str
    #: fraction of the official test file (stratified by class) that becomes validation.
    val_fraction: float
    seed: int


#: The current split: train = official train file; val/test = a seeded stratified split of
#: the official test file. Bump the version whenever the rule changes.
SPLITS: Mapping[str, SplitSpec] = MappingProxyType(
    {"v1": SplitSpec(id="lymphomnist-split-v1", val_fraction=0.25, seed=20240601)}
)
DEFAULT_SPLIT = "v1"


def task_view(name: str) -> TaskView:
    """Look a task up by name, with an error that lists the valid ones."""
    from lymphosort.errors import ConfigError

    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None

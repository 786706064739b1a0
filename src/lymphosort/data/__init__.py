"""Data: the LymphoMNIST metadata table, IDX files, the dataset, LymphoSim and lab folders."""

from __future__ import annotations

from typing import Any

from lymphosort.data.info import CLASSES, INFO, SPLITS, TASKS, TaskView, task_view

# Heavy members (numpy, torch) load on first use so `import lymphosort.data` and the CLI's
# --help stay fast. (`download` is not re-exported: the name belongs to the submodule
# lymphosort.data.download; use lymphomnist.download.)
_LAZY = {
    "read_idx": "lymphosort.data.idx",
    "write_idx": "lymphosort.data.idx",
    "check_pair": "lymphosort.data.idx",
    "LymphoMNIST": "lymphosort.data.lymphomnist",
    "SplitData": "lymphosort.data.lymphomnist",
    "load_split": "lymphosort.data.lymphomnist",
    "read_provenance": "lymphosort.data.lymphomnist",
}

__all__ = ["CLASSES", "INFO", "SPLITS", "TASKS", "TaskView", "task_view", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

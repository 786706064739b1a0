"""The atomic-write helper: the old file or the new one, never half of one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lymphosort.atomic import atomic_write, write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = write_json_atomic(tmp_path / "metrics.json", {"accuracy": 0.9})

    def dies_halfway(tmp: Path) -> None:
        tmp.write_text('{"accura')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies_halfway)
    assert target.read_text() == '{\n  "accuracy": 0.9\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_the_temporary_keeps_the_suffix_writers_look_at(tmp_path: Path) -> None:
    # np.save appends ".npy" to a name without it: the temporary must already end in it.
    path = atomic_write(tmp_path / "sub" / "x.npy", lambda tmp: np.save(tmp, np.arange(3)))
    assert np.array_equal(np.load(path), np.arange(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.npy"]
    assert path.stat().st_mode & 0o044  # readable by others under a usual umask, unlike mkstemp's 0600

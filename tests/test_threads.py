"""Thread choice: torch's default capped by the CPUs the process may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import lymphosort.threads as threads
from lymphosort.threads import CpuBudget, _cgroup_quota, configure_threads


@pytest.mark.parametrize(("v2", "expected"), [("max 100000\n", None), ("150000 100000\n", 1.5), ("50000 100000", 0.5)])
def test_cgroup_v2_quota(tmp_path: Path, v2: str, expected: float | None) -> None:
    (tmp_path / "cpu.max").write_text(v2)
    assert _cgroup_quota(tmp_path / "cpu.max", tmp_path / "q", tmp_path / "p") == expected


def test_cgroup_v1_quota_and_no_cgroup(tmp_path: Path) -> None:
    (tmp_path / "q").write_text("300000\n")
    (tmp_path / "p").write_text("100000\n")
    assert _cgroup_quota(tmp_path / "none", tmp_path / "q", tmp_path / "p") == 3.0
    (tmp_path / "q").write_text("-1\n")
    assert _cgroup_quota(tmp_path / "none", tmp_path / "q", tmp_path / "p") is None
    assert _cgroup_quota(tmp_path / "none", tmp_path / "none", tmp_path / "none") is None


def test_budget_cores_round_a_fractional_quota_up_and_never_exceed_the_affinity() -> None:
    assert CpuBudget(8, None).cores == 8
    assert CpuBudget(8, 1.5).cores == 2 and CpuBudget(8, 0.2).cores == 1 and CpuBudget(2, 16.0).cores == 2


def test_configure_threads_caps_the_default_and_honours_an_override(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_torch_default", 4)
    monkeypatch.setattr(threads, "_configured", None)
    try:
        monkeypatch.setattr(threads, "cpu_budget", lambda: CpuBudget(affinity=8, quota=2.0))
        assert configure_threads() == 2 == torch.get_num_threads()
        monkeypatch.setattr(threads, "cpu_budget", lambda: CpuBudget(affinity=16, quota=None))
        assert configure_threads() == 4  # never more than torch's own default
        assert configure_threads(3) == 3 == torch.get_num_threads()
        assert threads.ensure_threads() == 3  # configured once: fit() keeps the command's choice
        with pytest.raises(ValueError, match="--threads"):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_cores_other_jobs_keep_busy_are_left_to_them(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CpuBudget(2, None, busy=0.2).idle == 2 and CpuBudget(2, None, busy=1.0).idle == 1
    assert CpuBudget(2, None, busy=5.0).idle == 1 and CpuBudget(8, 4.0, busy=1.4).idle == 3
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_torch_default", 2)
    monkeypatch.setattr(threads, "_configured", None)
    try:
        monkeypatch.setattr(threads, "cpu_budget", lambda: CpuBudget(affinity=2, quota=None, busy=1.1))
        assert configure_threads() == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_others_busy_reads_the_machine_less_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert threads.others_busy(interval=0.01, stat=tmp_path / "absent") == 0.0  # no /proc/stat: no guess
    stat = tmp_path / "stat"
    ticks = iter([(1000, 5000), (1000 + 30, 5000)])  # +30 busy jiffies in the window

    def fake(path: Path = stat) -> tuple[int, int]:
        return next(ticks)

    monkeypatch.setattr(threads, "_busy_jiffies", fake)
    tick = os.sysconf("SC_CLK_TCK")
    got = threads.others_busy(interval=0.1, stat=stat)
    assert 0.0 < got <= 30 / tick / 0.1 + 1e-6  # at most the machine's busy time, and more than none

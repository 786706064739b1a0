"""How many CPU threads torch may use: the cores this process can actually run on.

torch sizes its intra-op pool from the machine's cores. In a container limited by a cgroup
CPU quota, or under `taskset`, that is more threads than the process gets: OpenMP threads
then wait at every barrier for a sibling the scheduler has parked, and a step can take
several times longer (see benchmarks/busy_machine.py). The same happens on a machine shared
with other CPU-bound jobs: their cores are taken, so threads beyond the idle cores only wait.
`configure_threads` is the one place that sets torch's thread count (the usable cores minus
those other jobs keep busy, sampled over 0.2 s at start); `--threads N` overrides.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuBudget", "cpu_budget", "configure_threads", "ensure_threads"]

log = logging.getLogger(__name__)

#: cgroup v2 quota file, and the v1 pair (quota, period) in microseconds.
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")

_torch_default: int | None = None  # torch's own choice, read before the first change
_configured: int | None = None  # what configure_threads last set (None: never called)


@dataclass(frozen=True)
class CpuBudget:
    """CPUs this process may use: its affinity mask and its cgroup quota (None: no quota), and
    how many of them other jobs keep busy (sampled when the choice is made)."""

    affinity: int
    quota: float | None
    busy: float = 0.0

    @property
    def cores(self) -> int:
        """Whole cores usable at once: the affinity count, capped by the quota (rounded up)."""
        if self.quota is None:
            return self.affinity
        return max(1, min(self.affinity, math.ceil(self.quota)))

    @property
    def idle(self) -> int:
        """Usable cores that other jobs leave free (at least one)."""
        return max(1, self.cores - int(round(min(self.busy, self.cores))))

    def describe(self) -> str:
        quota = "no cgroup CPU quota" if self.quota is None else f"cgroup quota {self.quota:g} CPUs"
        return f"{self.affinity} CPUs in the affinity mask, {quota}, {self.busy:.1f} busy with other jobs"


def _cgroup_quota(v2: Path = CGROUP_V2_CPU_MAX, v1_quota: Path = CGROUP_V1_QUOTA,
                  v1_period: Path = CGROUP_V1_PERIOD) -> float | None:
    """CPUs allowed by the cgroup (quota / period), or None when unlimited or unreadable."""
    try:
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period or 100_000)
        if v1_quota.is_file() and v1_period.is_file():
            quota_us = int(v1_quota.read_text().strip())
            return None if quota_us <= 0 else quota_us / int(v1_period.read_text().strip())
    except (OSError, ValueError):
        pass  # an odd or unreadable cgroup file means: no known limit
    return None


def _busy_jiffies(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine so far, or None where /proc/stat is absent."""
    try:
        fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def others_busy(interval: float = 0.2, stat: Path = Path("/proc/stat")) -> float:
    """Cores other processes keep busy right now: the machine's busy CPU time over a short
    window, less this process's own. Sampled, not the load average: a 1-minute average would
    count this process's own earlier work (a previous pipeline stage) as someone else's."""
    first = _busy_jiffies(stat)
    if first is None:
        return 0.0
    t0, own0 = time.monotonic(), sum(os.times()[:2])
    time.sleep(interval)
    second = _busy_jiffies(stat)
    if second is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    elapsed = max(time.monotonic() - t0, 1e-3)
    busy = (second[0] - first[0]) / tick / elapsed - (sum(os.times()[:2]) - own0) / elapsed
    return max(0.0, busy)


def cpu_budget() -> CpuBudget:
    """The CPUs this process may run on now, and how many of them other jobs keep busy."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuBudget(affinity=max(1, affinity), quota=_cgroup_quota(), busy=others_busy())


def configure_threads(threads: int | None = None, *, announce: bool = True) -> int:
    """Set torch's intra-op thread count and return it.

    `threads` None chooses: torch's default (which already honours OMP_NUM_THREADS), capped
    by the usable cores of `cpu_budget` that other jobs leave idle. The choice is logged once per value (`announce`
    False: not at all, for a measurement that sets and restores its own count).
    """
    global _torch_default, _configured
    import torch

    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    if threads is not None:
        if int(threads) < 1:
            from lymphosort.errors import ConfigError

            raise ConfigError(f"--threads must be >= 1, got {threads}")
        n, why = int(threads), "as requested"
    else:
        budget = cpu_budget()
        n = max(1, min(_torch_default, budget.idle))
        why = f"torch default {_torch_default}; {budget.describe()}"
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if announce:
        if _configured != n:
            log.info("torch uses %d CPU thread(s) (%s)", n, why)
        _configured = n
    return n


def ensure_threads() -> int:
    """`configure_threads()` unless a command already configured the threads (e.g. --threads)."""
    import torch

    return configure_threads() if _configured is None else torch.get_num_threads()

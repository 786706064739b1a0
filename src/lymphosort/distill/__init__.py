"""lymphosort.distill: distillation losses (one registry) and feature hooks by module path."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

#: THE documented best distillation setting: the one constant `lymphosort distill` falls
#: back to without --student/--method. From BENCHMARKS.md (LymphoSim 2.0, t4-vs-b test):
#: tiny-32c with kd 93.39% / dkd 93.50% / paper recipe 92.47% at 8 epochs (kd and dkd tie
#: on validation, kd is simpler); at the default 30 epochs kd 95.07% / 94.87% (two seeds)
#: vs paper 93.74%, and the kd students keep the teacher's zero-shot T8 vs B (88.0%).
#: Longer is better (8 -> 16 -> 30 epochs: 93.4 -> 94.0 -> 95.1%): keep the default long.
BEST_SETTING: Mapping[str, Any] = MappingProxyType(
    {"student": "tiny-32c", "method": "kd", "method_kwargs": MappingProxyType({})}
)

__all__ = ["BEST_SETTING"]

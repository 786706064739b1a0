"""lymphosort.distill: distillation losses (one registry) and feature hooks by module path."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

#: THE documented best distillation setting: the one constant `lymphosort distill` falls
#: back to without --student/--method. From BENCHMARKS.md (LymphoSim default, t4-vs-b test):
#: tiny-32c with kd 91.04% (8 epochs) against tiny-32 with kd 87.65% > paper recipe 84.49% >
#: labels only 80.75% (6 epochs); tiny-32c's 32x32 stream also meets the FPGA latency aim.
#: dkd and at are not yet measured on it: update it here, and only here, from that sweep.
BEST_SETTING: Mapping[str, Any] = MappingProxyType(
    {"student": "tiny-32c", "method": "kd", "method_kwargs": MappingProxyType({})}
)

__all__ = ["BEST_SETTING"]

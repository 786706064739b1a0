"""lymphosort.distill: distillation losses (one registry) and feature hooks by module path."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

#: THE documented best distillation setting: the one constant `lymphosort distill` falls
#: back to without --student/--method. Provisional (tiny-48: the reference student's input
#: size, under the 6,000-parameter budget; Hinton KD) until the student x method sweep
#: measures a winner; update it here, and only here, from that measurement.
BEST_SETTING: Mapping[str, Any] = MappingProxyType(
    {"student": "tiny-48", "method": "kd", "method_kwargs": MappingProxyType({})}
)

__all__ = ["BEST_SETTING"]

"""The probe's one-change variants build, run, and change what they claim to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import student_probe  # noqa: E402

from lymphosort.models.registry import create_model  # noqa: E402


@pytest.mark.parametrize("variant", sorted(student_probe.VARIANTS))
def test_variant_builds_and_runs(variant: str) -> None:
    size = student_probe.VARIANTS[variant][0]
    model = create_model(student_probe.register(variant), num_classes=2).eval()
    assert model(torch.randn(3, 1, size, size)).shape == (3, 2)


def test_std_variant_ignores_level_and_contrast() -> None:
    torch.manual_seed(0)
    model = create_model(student_probe.register("std"), num_classes=2).eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(2.5 * x + 0.7), rtol=1e-4, atol=1e-4)


def test_sep_variant_uses_depthwise_convs() -> None:
    model = create_model(student_probe.register("sep"), num_classes=2)
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 2 and all(m.groups == m.in_channels for m in depthwise)
    assert sum(p.numel() for p in model.parameters()) <= 6000

"""The distillation-step benchmark runs, and times the graph the training loop really uses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import distill_step  # noqa: E402


def test_distill_step_writes_positive_times_and_consistent_ratios(tmp_path: Path) -> None:
    out = tmp_path / "step.json"
    assert distill_step.main(["--teacher", "compact-teacher", "--batch-size", "4", "--repeats", "2", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    ms = r["median_ms"]
    assert set(ms) == {"teacher_eager", "teacher_frozen_graph", "teacher_bf16_autocast", "student_step"}
    assert all(v > 0 for v in ms.values())
    assert r["teacher_speedup"] == ms["teacher_eager"] / ms["teacher_frozen_graph"]
    assert r["step_ms"]["frozen_teacher"] == ms["teacher_frozen_graph"] + ms["student_step"]
    assert r["step_ms"]["bf16_teacher"] == ms["teacher_bf16_autocast"] + ms["student_step"]
    # bfloat16 logits are approximate (8 significant bits), never wildly off.
    assert 0 < r["bf16_max_abs_logit_error"] < 0.5 and 0 <= r["bf16_argmax_agreement"] <= 1

"""realtime_bench's worker aims: what they read from a `workers` report, and when they hold."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import realtime_bench  # noqa: E402


def _run(workers: int, cells: float, dropped: int, p99: float, scaling: float | None,
         lanes: tuple[float, ...] = (0.87, 0.84)) -> dict[str, Any]:
    """A workers run; `lanes`: each lane's accuracy (lane 1 is the flow both runs decide)."""
    per = [{"lane": i, "worker": i, "accuracy": a, "accuracy_n": 1000} for i, a in enumerate(lanes[:workers])]
    return {"workers": workers, "cells_per_s": cells, "frames": 100_000, "dropped_frames": dropped,
            "dropped_frame_share": dropped / 100_000, "p99_latency_us": p99, "detection_precision": 1.0,
            "detection_recall": 0.998, "scaling_vs_one_worker": scaling, "per_worker": per,
            "accuracy": sum(w["accuracy"] for w in per) / len(per), "accuracy_n": 1000 * workers}


def _report(*runs: dict[str, Any]) -> dict[str, Any]:
    return {"sim": {"preset": "default", "fps": 5000.0}, "queue_size": 16, "model": "m", "backend": "onnx",
            "runs": list(runs)}


def test_the_scaling_aim_holds_only_with_few_drops() -> None:
    one = _run(1, 3000, 10, 300, 1.0)
    few = realtime_bench._workers_aims(_report(one, _run(2, 6100, 40, 600, 2.03)), "cmd")
    many = realtime_bench._workers_aims(_report(one, _run(2, 6100, 800, 600, 2.03)), "cmd")
    assert [a["target"] for a in few] == [">= 15,000 cells/s", ">= 1.8x (proposed)", "within 1 point"]
    assert few[1]["met"] and not many[1]["met"]  # 0.04% drops against 0.8%
    assert not few[0]["met"]  # 6,100 cells/s is not 15,000
    assert "5000 frames/s a lane, 16-frame buffer" in few[0]["data"]
    # lane 1 alone: the same flow in both runs (lane 2's other cells do not count against it)
    assert few[2]["value"] == 0.0 and few[2]["met"] and "lane 2, another flow: 84.00%" in few[2]["aim"]


def test_the_accuracy_aim_reads_the_shared_lane() -> None:
    one = _run(1, 3000, 10, 300, 1.0, lanes=(0.90,))
    worse = realtime_bench._workers_aims(_report(one, _run(2, 6100, 40, 600, 2.03, lanes=(0.885, 0.95))), "cmd")
    assert worse[2]["value"] == -1.5 and not worse[2]["met"]  # 88.5% against 90.0% on lane 1
    unscored = _run(1, 3000, 10, 300, 1.0)
    unscored["per_worker"] = []
    assert len(realtime_bench._workers_aims(_report(unscored, _run(2, 6100, 40, 600, 2.03)), "cmd")) == 2


def test_a_run_without_one_worker_has_no_scaling_aim() -> None:
    aims = realtime_bench._workers_aims(_report(_run(2, 6100, 40, 600, None)), "cmd")
    assert [a["target"] for a in aims] == [">= 15,000 cells/s"]

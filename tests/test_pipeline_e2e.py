"""The main job end to end on the `smoke` preset: every stage, the report, then a cached rerun."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("hls4ml", reason="the export stage needs the fpga extra (hls4ml)")


@pytest.mark.slow
@pytest.mark.hls
def test_smoke_pipeline_runs_every_stage_and_reruns_from_cache(tmp_path: Path) -> None:
    from lymphosort.pipeline import STAGES, run_pipeline

    out = tmp_path / "run"
    outputs = run_pipeline(out, preset="smoke")
    assert list(outputs) == [s.name for s in STAGES]
    for stage in STAGES:
        record = json.loads((out / "stages" / stage.name / "stage.json").read_text())
        assert record["status"] == "done"
    data = outputs["data"]
    assert data["provenance"]["source"] == "simulated"
    assert sum(data["splits"]["train"]["counts"].values()) == 900
    assert 0.0 <= outputs["teacher"]["metrics"]["accuracy"] <= 1.0
    assert [r["key"] for r in outputs["students"]["rows"]] == ["teacher", "tiny-32w-kd", "tiny-32w-kd-q8"]
    # The QAT row fine-tunes the float row's student rather than starting from scratch.
    qat_cfg = yaml.safe_load((out / "stages" / "students" / "tiny-32w-kd-q8" / "config.yaml").read_text())
    assert qat_cfg["init_from"] == str(out / "stages" / "students" / "tiny-32w-kd")
    assert outputs["export"]["hls"]["agreement"] >= 0.999
    assert outputs["export"]["onnx"]["max_abs_diff"] <= 1e-4
    assert outputs["realtime"]["report"]["frames"] > 0
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    # Nothing changed: every stage is skipped and the stored outputs come back.
    t0 = time.perf_counter()
    again = run_pipeline(out, preset="smoke")
    assert time.perf_counter() - t0 < 30
    assert again["students"]["rows"] == outputs["students"]["rows"]

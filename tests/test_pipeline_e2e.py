"""The main job end to end on the `smoke` preset: every stage, the report, then a cached rerun."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

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
    # The teacher's numbers are the test split's, and consistent with its confusion matrix.
    m = outputs["teacher"]["metrics"]
    confusion = np.array(m["confusion"])
    assert confusion.sum() == m["n"] == sum(data["splits"]["test"]["counts"][c] for c in ("B", "T4"))
    assert m["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    assert m["intervals"]["accuracy"][0] <= m["accuracy"] <= m["intervals"]["accuracy"][1]
    assert [r["key"] for r in outputs["students"]["rows"]] == ["teacher", "tiny-32-whole-kd", "tiny-32-whole-kd-q8"]
    # The QAT row fine-tunes the float row's student rather than starting from scratch.
    qat_cfg = yaml.safe_load((out / "stages" / "students" / "tiny-32-whole-kd-q8" / "config.yaml").read_text())
    assert qat_cfg["init_from"] == str(out / "stages" / "students" / "tiny-32-whole-kd")
    assert outputs["export"]["hls"]["agreement"] >= 0.999
    assert outputs["export"]["onnx"]["max_abs_diff"] <= 1e-4
    rt = outputs["realtime"]["report"]
    # paced, so a loaded machine drops frames (recall falls); what is decided is still a cell
    assert rt["frames"] == rt["frames_processed"] + rt["dropped_frames"] and rt["decisions"] > 0
    assert rt["detection_precision"] >= 0.9
    # Plots are real pictures, not empty files: decodable, of a sensible size, not blank.
    for rel in [outputs["teacher"]["curves"], *outputs["teacher"]["plots"].values(), outputs["realtime"]["histogram"]]:
        with Image.open(out / rel) as im:
            pixels = np.asarray(im.convert("L"), dtype=np.float32)
        assert min(pixels.shape) >= 100 and pixels.std() > 5, rel
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    # Nothing changed: every stage is skipped and the stored outputs come back.
    t0 = time.perf_counter()
    again = run_pipeline(out, preset="smoke")
    assert time.perf_counter() - t0 < 30
    assert again["students"]["rows"] == outputs["students"]["rows"]

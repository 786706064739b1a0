"""Side-by-side comparison of finished runs (the benchmark table's engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lymphosort.evaluate.compare import RunRow, compare_runs, markdown_table
from lymphosort.train.config import TrainConfig
from lymphosort.train.fit import fit
from tests.train.helpers import toy_split


def test_compare_runs_ratios_against_the_reference_in_torch_and_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    train, val, test = toy_split(64, 0), toy_split(32, 1, "val"), toy_split(32, 2, "test")
    runs = {}
    for name in ("paper-student2", "tiny-32-centre"):
        cfg = TrainConfig(model=name, epochs=1, batch_size=32, patience=0)
        runs[name] = fit(cfg, tmp_path / name, quiet=True, train=train, val=val, test=test).run_dir
    rows = [RunRow("ref", "paper-student2 (ref)", runs["paper-student2"], "cmd a"),
            RunRow("tiny", "tiny-32-centre", runs["tiny-32-centre"], "cmd b")]
    table = compare_runs(rows, latency_repeats=3, onnxruntime=True)
    ref, tiny = table["rows"]
    assert ref["speedup_b1"] == pytest.approx(1.0) and ref["speedup_b1_ort"] == pytest.approx(1.0)
    assert tiny["speedup_b1_ort"] == pytest.approx(ref["latency_ms_b1_ort"] / tiny["latency_ms_b1_ort"])
    assert tiny["macs_vs_teacher"] == pytest.approx(tiny["macs"] / ref["macs"])
    assert tiny["input_size"] == 32 and table["latency_onnxruntime"]["runtime"] == "onnxruntime"
    md = markdown_table(table["rows"])
    assert "ONNX Runtime b1 latency" in md and "cmd b" in md


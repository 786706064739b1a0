"""The few-shot grid (resumable, curve files) and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from lymphosort.cli import main
from lymphosort.transfer.fewshot import few_shot
from lymphosort.transfer.finetune import FinetuneConfig
from lymphosort.transfer.shots import lymphomnist_data


def test_grid_writes_curve_and_resumes(t4_run: Path, disc_root: Path, tmp_path: Path) -> None:
    data = lymphomnist_data(disc_root, "t8-vs-b")
    out = tmp_path / "grid"
    curve = few_shot(t4_run, data, out, shots=(2, 5), modes=("linear",), seeds=(0, 1), base=FinetuneConfig(n_boot=20, head_steps=100))
    assert [r["shots"] for r in curve["rows"]] == ["2", "5"]
    row = curve["rows"][1]
    assert len(row["accuracy"]["per_seed"]) == 2 and row["accuracy"]["interval"][0] <= row["accuracy"]["mean"]
    assert curve["zero_shot"]["accuracy"] >= 0.9
    for name in ("curve.json", "curve.png", "table.md"):
        assert (out / name).stat().st_size > 0
    assert "| zero-shot | 0 |" in (out / "table.md").read_text()
    cell = out / "runs" / "linear-k5-s1" / "model.safetensors"
    before = cell.stat().st_mtime_ns
    again = few_shot(t4_run, data, out, shots=(2, 5), modes=("linear",), seeds=(0, 1), base=FinetuneConfig(n_boot=20, head_steps=100))
    assert cell.stat().st_mtime_ns == before and again["rows"] == curve["rows"]


def test_cli_finetune_and_zero_shot(t4_run: Path, disc_root: Path, tmp_path: Path, capsys) -> None:
    rc = main(["transfer", "finetune", str(t4_run), "--task", "t8-vs-b", "--mode", "linear", "--shots", "5",
               "--seeds", "0", "1", "--out", str(tmp_path / "ft"), "--data-root", str(disc_root),
               "--no-report", "--n-boot", "20", "--head-steps", "50"])
    assert rc == 0
    for s in (0, 1):
        assert json.loads((tmp_path / "ft" / f"seed{s}" / "model.json").read_text())["data"]["transfer"]["seed"] == s
    rc = main(["transfer", "zero-shot", str(t4_run), "--task", "t8-vs-b", "--data-root", str(disc_root),
               "--out", str(tmp_path / "zs"), "--n-boot", "20", "--no-latency"])
    assert rc == 0 and "threshold chosen on val" in capsys.readouterr().out

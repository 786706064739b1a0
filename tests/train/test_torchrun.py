"""The same `train` command runs data-parallel under torchrun (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_tiny_lymphomnist


@pytest.mark.slow
def test_train_under_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_tiny_lymphomnist(root, n_train=96, n_test=48, provenance={"source": "simulated", "preset": "t", "seed": 0})
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        "-m", "lymphosort.cli", "train", "--model", "tiny-32", "--data-root", str(root), "--out", str(out),
        "--epochs", "2", "--batch-size", "16", "--patience", "0", "--accelerator", "cpu", "--quiet", "--no-eval",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Only rank 0 reports and writes the run folder.
    assert proc.stdout.count("run folder:") == 1
    hist = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    card = json.loads((out / "model.json").read_text())
    assert card["model"] == "tiny-32" and card["config"]["strategy"] == "auto"
    # 64 training images (t4-vs-b keeps 2 of 3 classes), 2 ranks x batch 16: 2 steps per epoch.
    metrics = (out / "logs" / "metrics.csv").read_text().splitlines()
    assert metrics and (out / "last.ckpt").is_file()
    assert "world_size=2" in (out / "train.log").read_text()

"""Fixtures of the real-time tests: one tiny trained model (torch run + ONNX export) per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.realtime.helpers import train_tiny

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "brightfield"
LYMPHOMNIST_REFERENCE = REFERENCE.parent / "lymphomnist" / "crops"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("rt") / "run", n=400, epochs=3)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lymphosort.export.onnx import export_onnx
    from lymphosort.models.checkpoint import load_checkpoint

    out = tmp_path_factory.mktemp("rt") / "onnx"
    model, _ = load_checkpoint(tiny_run)
    export_onnx(model, out / "model.onnx")
    shutil.copyfile(tiny_run / "model.json", out / "model.json")
    return out


@pytest.fixture(scope="session")
def flow_frames() -> list:
    """120 LymphoSim frames at the benchmark's fast-flow operating point (rendered once)."""
    from lymphosort.data.synth import render_flow

    return list(render_flow(120, seed=3, flow_px_per_frame=64.0, cell_rate=0.5, p_pair=0.15))

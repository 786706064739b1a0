"""Float ONNX export: graph contract, ONNX Runtime vs torch, and the CLI bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from lymphosort.export.onnx import check_onnx, export_onnx, onnx_session  # noqa: E402
from lymphosort.models import create_model  # noqa: E402
from lymphosort.models.checkpoint import ModelCard, save_checkpoint  # noqa: E402


@pytest.mark.parametrize("name", ["tiny-32", "paper-student2"])
def test_export_contract_and_match(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    path = export_onnx(model, tmp_path / "m.onnx")
    sess = onnx_session(path)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    s = model.spec.input_size
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.shape[1:] == [1, s, s] and isinstance(inp.shape[0], str)  # symbolic batch
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (37, 64, 64), dtype=np.uint8))
    r = check_onnx(path, model, images)
    assert r["checker"] == "ok" and r["n_checked"] == 37
    assert r["max_abs_diff"] <= 1e-4 and r["argmax_agreement"] == 1.0


def test_static_batch(tmp_path: Path) -> None:
    model = create_model("tiny-32")
    sess = onnx_session(export_onnx(model, tmp_path / "m.onnx", dynamic_batch=False))
    assert sess.get_inputs()[0].shape == [1, 1, 32, 32]


def test_cli_bundle(tmp_path: Path, tiny_root: Path) -> None:
    from lymphosort.cli import main

    torch.manual_seed(0)
    model = create_model("tiny-32")
    run = save_checkpoint(tmp_path / "run", model, ModelCard.from_model(model, task="t4-vs-b", classes=["B", "T4"]))
    out = tmp_path / "bundle"
    assert main(["export", "onnx", str(run), "--out", str(out), "--data-root", str(tiny_root)]) == 0
    rec = json.loads((out / "export.json").read_text())
    assert rec["max_abs_diff"] <= 1e-4 and rec["n_checked"] > 0 and "test split" in rec["checked_on"]
    assert json.loads((out / "model.json").read_text())["spec"]["input_size"] == 32
    assert (out / "model.onnx").stat().st_size > 0

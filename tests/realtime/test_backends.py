from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lymphosort.errors import ConfigError
from lymphosort.realtime.backends import BACKENDS, Backend, BackendError, load_backend


def _crops(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    from lymphosort.data.synth import render_crops

    images, labels, _ = render_crops(n, seed=7)
    return images, (labels > 0).astype(int)


def test_torch_and_onnx_agree(tiny_run: Path, tiny_onnx: Path) -> None:
    images, _ = _crops()
    pt = load_backend("torch", tiny_run)
    ox = load_backend("onnx", tiny_onnx)
    assert isinstance(pt, Backend) and isinstance(ox, Backend)
    a, b = pt.predict_proba(images), ox.predict_proba(images)
    assert a.shape == b.shape == (16, 2)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert pt.classes == ox.classes == ["B", "T"]
    assert ox.predict_proba(images[:0]).shape == (0, 2)


def test_backends_prepare_a_field_of_view_model_as_the_dataset_path_does(tmp_path: Path) -> None:
    import shutil

    import torch

    from lymphosort.export.onnx import export_onnx
    from lymphosort.models import create_model
    from lymphosort.models.checkpoint import ModelCard, save_checkpoint

    torch.manual_seed(0)
    model = create_model("tiny-32-centre").eval()  # sees only the centred 32x32 of each 64x64 crop
    run = save_checkpoint(tmp_path / "run", model, ModelCard.from_model(model, task="t4-vs-b", classes=["B", "T4"]))
    export_onnx(model, tmp_path / "onnx" / "model.onnx")
    shutil.copyfile(run / "model.json", tmp_path / "onnx" / "model.json")
    images, _ = _crops()
    with torch.no_grad():
        ref = torch.softmax(model(model.spec.prepare(torch.from_numpy(images))), 1).numpy()
    for backend in (load_backend("torch", run), load_backend("onnx", tmp_path / "onnx")):
        np.testing.assert_allclose(backend.predict_proba(images), ref, atol=1e-5)
    # The border outside the field of view does not reach the model.
    edited = images.copy()
    edited[:, :8] = 0
    np.testing.assert_allclose(load_backend("onnx", tmp_path / "onnx").predict_proba(edited), ref, atol=1e-5)


def test_onnx_small_batches_through_iobinding_equal_plain_runs(tiny_onnx: Path) -> None:
    images, _ = _crops()
    ox = load_backend("onnx", tiny_onnx)
    ref = ox.predict_proba(images)  # 16 > MAX_BOUND_BATCH: plain run
    got = [ox.predict_proba(images[i:i + k]) for i, k in [(0, 1), (1, 2), (3, 1), (4, 3), (7, 2), (9, 1)]]
    np.testing.assert_allclose(np.concatenate(got), ref[:10], atol=1e-6)  # earlier results not overwritten
    assert set(ox._bound) == {1, 2, 3}


def test_registry_and_errors(tmp_path: Path, tiny_run: Path) -> None:
    assert {"torch", "onnx", "hls"} <= set(BACKENDS)
    with pytest.raises(ConfigError):
        load_backend("tensorrt", tiny_run)
    with pytest.raises(BackendError, match="not a folder"):
        load_backend("onnx", tmp_path / "missing")
    with pytest.raises(BackendError, match="model.onnx"):
        load_backend("onnx", tiny_run)  # a run folder, not an export
    with pytest.raises(ValueError):
        load_backend("torch", tiny_run).predict_proba(np.zeros((2, 64, 64), np.float32))


def test_hls_backend_is_the_bit_exact_fixed_point_model(tmp_path: Path) -> None:
    pytest.importorskip("brevitas", reason="brevitas (fpga extra) is needed to build a quantised student")
    import json

    import torch

    import lymphosort.models.quant  # noqa: F401  (registers the '-q<bits>' students)
    from lymphosort.export.fixedpoint import from_quant_model
    from lymphosort.models import create_model
    from lymphosort.models.checkpoint import ModelCard

    torch.manual_seed(0)
    m = create_model("tiny-32-q8").eval()
    fp = from_quant_model(m, classes=["B", "T"])
    fp.save(tmp_path)
    card = ModelCard.from_model(m, task="t-vs-b", classes=["B", "T"])
    (tmp_path / "model.json").write_text(json.dumps(card.to_dict()))
    hls = load_backend("hls", tmp_path)
    images, _ = _crops(8)
    got = hls.predict_proba(images)
    assert hls.classes == ["B", "T"] and got.shape == (8, 2)
    np.testing.assert_allclose(got, fp.predict_proba(images), atol=1e-6)
    assert np.array_equal(got.argmax(1), fp.predict_logits(images).argmax(1))


def test_hls_backend_needs_a_bundle(tmp_path: Path) -> None:
    try:
        import lymphosort.export.fixedpoint  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="fixedpoint"):
            load_backend("hls", tmp_path)
        return
    with pytest.raises(Exception):  # fast path present: an empty folder is not a bundle
        load_backend("hls", tmp_path)


@pytest.mark.rtl
@pytest.mark.slow
def test_rtl_backend_decides_as_the_integer_backend_on_the_flow(tmp_path: Path) -> None:
    """`realtime --backend rtl` runs the exported Verilog in Verilator in the loop; on the same
    frames its decisions equal the integer (hls) backend's, cell by cell."""
    pytest.importorskip("da4ml", reason="da4ml is not installed (pip install -e .[rtl])")
    pytest.importorskip("brevitas")
    import json

    from lymphosort.cli import main
    from tests.export.helpers import small_qat_run

    run = small_qat_run(tmp_path / "run", bias_sd=0.5)  # a small design: fast to build and simulate
    rtl = tmp_path / "rtl"
    assert main(["export", "rtl", str(run), "--out", str(rtl), "--n-check", "8", "--n-gap-check", "0"]) == 0
    events = {}
    for backend in ("rtl", "hls"):
        events[backend] = tmp_path / f"{backend}.jsonl"
        assert main(["realtime", "--model", str(rtl), "--backend", backend, "--max-frames", "60", "--pool-frames", "60",
                     "--no-paced", "--drop", "block", "--events", str(events[backend]), "--quiet"]) == 0
    keys = ("cell_id", "frame", "cls", "prob", "sort", "reason", "x", "y")
    rows = {b: [{k: e[k] for k in keys} for e in map(json.loads, f.read_text().splitlines())] for b, f in events.items()}
    # decisions on many cells, with probabilities that follow the crops (not one constant)
    assert len(rows["rtl"]) >= 10 and len({r["prob"] for r in rows["rtl"] if r["cls"]}) >= 5
    assert rows["rtl"] == rows["hls"]

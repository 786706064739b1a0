from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lymphosort.cli import main
from lymphosort.realtime.sources import (FolderSource, Frame, FrameSource, SimConfig, SimSource, SourceError,
                                         VideoSource, load_grey, open_source)
from tests.realtime.conftest import REFERENCE


def _write_frames(folder: Path, frames) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in frames:
        Image.fromarray(f.image).save(folder / f"frame_{f.index:05d}.png")


def test_sim_source_replays_its_pool_as_new_sequences() -> None:
    src = SimSource(SimConfig(seed=1, pool_frames=5, max_frames=12, cell_rate=0.5))
    assert isinstance(src, FrameSource) and src.render_s > 0
    frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    assert [f.sequence for f in frames] == [0] * 5 + [1] * 5 + [2] * 2
    assert np.array_equal(frames[0].image, frames[5].image) and frames[0].truth == frames[5].truth
    live = list(SimSource(SimConfig(seed=1, pool_frames=0, max_frames=3)))
    assert len(live) == 3 and np.array_equal(live[0].image, frames[0].image)


def test_folder_source_and_open_source(tmp_path: Path) -> None:
    frames = list(SimSource(SimConfig(seed=2, pool_frames=4, max_frames=4)))
    _write_frames(tmp_path / "frames", frames)
    src = open_source(tmp_path / "frames", fps=100.0)
    assert isinstance(src, FolderSource) and src.fps == 100.0
    got = list(src)
    assert len(got) == 4 and np.array_equal(got[2].image, frames[2].image) and got[2].t_s == pytest.approx(0.02)
    still = list(open_source(tmp_path / "frames" / "frame_00001.png"))
    assert len(still) == 1 and isinstance(still[0], Frame)
    with pytest.raises(SourceError):
        open_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image files"):
        FolderSource(tmp_path / "empty")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match="cannot read"):
        load_grey(tmp_path / "bad.png")


def test_video_without_a_reader_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    video = tmp_path / "run.avi"
    video.write_bytes(b"\0" * 16)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(SourceError, match="imageio"):
        VideoSource(video)


def test_cli_sim_run_writes_report_and_events(tiny_onnx: Path, tmp_path: Path) -> None:
    rep_path, ev_path = tmp_path / "rep.json", tmp_path / "ev.jsonl"
    rc = main(["realtime", "--source", "sim", "--model", str(tiny_onnx), "--backend", "onnx", "--pool-frames", "60",
               "--max-frames", "120", "--cell-rate", "0.5", "--fps", "1000", "--as-fast-as-possible", "--drop",
               "block", "--quiet", "--target-purity", "0.9", "--report", str(rep_path), "--events", str(ev_path)])
    assert rc == 0
    rep = json.loads(rep_path.read_text())
    assert rep["frames"] == 120 and rep["decisions"] > 0 and rep["detection_recall"] >= 0.99
    assert 0.0 <= rep["threshold"] <= 1.0 and rep["calibration_curve"]
    assert rep["sim"]["render_s"] > 0
    lines = ev_path.read_text().splitlines()
    assert len(lines) == rep["decisions"] and {"cell_id", "sort", "prob", "t_decision"} <= set(json.loads(lines[0]))


def test_cli_folder_source_with_torch(tiny_run: Path, tmp_path: Path) -> None:
    frames = list(SimSource(SimConfig(seed=2, pool_frames=30, max_frames=30, cell_rate=0.5)))
    _write_frames(tmp_path / "frames", frames)
    rc = main(["realtime", "--source", str(tmp_path / "frames"), "--model", str(tiny_run), "--backend", "torch",
               "--flow-px", "64", "--quiet", "--report", str(tmp_path / "r.json"), "--as-fast-as-possible",
               "--drop", "block"])
    assert rc == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["frames"] == 30 and rep["decisions"] > 0 and rep["detection_recall"] is None


def test_cli_errors_are_one_sentence(tiny_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["realtime", "--source", "/nonexistent/x", "--model", str(tiny_onnx), "--quiet"]) == 2
    assert "neither 'sim'" in capsys.readouterr().err
    assert main(["realtime", "--model", str(tiny_onnx), "--sort-class", "NK", "--quiet"]) == 2


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"needs ../shared: real reference crops absent ({REFERENCE})")
def test_cli_still_mode_on_reference_crops(tiny_onnx: Path, tmp_path: Path) -> None:
    rc = main(["realtime", "--source", str(REFERENCE), "--still", "--model", str(tiny_onnx), "--quiet",
               "--report", str(tmp_path / "s.json")])
    assert rc == 0
    rep = json.loads((tmp_path / "s.json").read_text())
    assert rep["images"] == rep["with_one_detection"] == len(list(REFERENCE.glob("*.png")))


def test_cli_onnx_backend_takes_a_run_folder_exports_once_and_reuses(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from lymphosort.export.run import weights_digest

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = ["realtime", "--source", "sim", "--model", str(run), "--backend", "onnx", "--pool-frames", "20",
            "--max-frames", "20", "--cell-rate", "0.5", "--as-fast-as-possible", "--drop", "block", "--quiet",
            "--report", str(tmp_path / "r.json")]
    assert main(args) == 0
    err = capsys.readouterr().err
    cache = run / "export" / "onnx"
    assert f"exporting {run} to ONNX in {cache}" in err and "max |diff|" in err
    record = json.loads((cache / "export.json").read_text())
    assert record["passed"] is True and record["weights_sha256"] == weights_digest(run)
    assert record["max_abs_diff"] <= record["tolerance"] and record["n_checked"] > 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["model"] == str(run) and rep["model_folder"] == str(cache) and rep["frames"] == 20

    made = (cache / "model.onnx").stat().st_mtime_ns
    assert main(args) == 0
    assert f"reusing the ONNX export {cache}" in capsys.readouterr().err
    assert (cache / "model.onnx").stat().st_mtime_ns == made

    # A failed check is not reused ...
    (cache / "export.json").write_text(json.dumps({**record, "passed": False}))
    assert main(args) == 0
    assert "exporting" in capsys.readouterr().err
    # ... nor an export of other weights (the run was resumed or retrained).
    import torch

    from lymphosort.models.checkpoint import load_checkpoint, save_checkpoint

    model, card = load_checkpoint(run)
    with torch.no_grad():
        model.head.bias.add_(0.1)
    save_checkpoint(run, model, card)
    assert main(args) == 0
    assert "exporting" in capsys.readouterr().err
    assert json.loads((cache / "export.json").read_text())["weights_sha256"] == weights_digest(run)

"""`lymphosort data info|download|synth|show` through the real entry point."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lymphosort.cli import main
from lymphosort.data import lymphomnist as lm
from lymphosort.data.info import INFO, MIRROR_ENV, TASKS


def test_register_is_cheap() -> None:
    code = (
        "import argparse, sys; import lymphosort.data.cli as c; p = argparse.ArgumentParser();"
        "c.register(p.add_subparsers()); bad = {'torch', 'numpy', 'matplotlib'} & set(sys.modules);"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_data_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data"])
    assert info.value.code == 2
    assert "info" in capsys.readouterr().err


def test_info_without_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"On disk: {tmp_path / 'LymphoMNIST' / 'raw'}" in out
    assert out.count("missing") >= 4 and "lymphosort data download" in out and "lymphosort data synth" in out
    for name in TASKS:
        assert name in out
    assert str(INFO["n_train"]) in out and "B=0, T4=1, T8=2" in out


def test_info_with_files(tiny_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", "--root", str(tiny_root)]) == 0
    out = capsys.readouterr().out
    assert "provenance: source=simulated, preset=test, seed=0" in out
    assert f"split id: {lm.load_split(tiny_root, 'val').split_id}" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["train"] == ["10", "10", "10", "30"]
    assert lines["val"] == ["2", "2", "2", "6"]
    assert lines["test"] == ["6", "6", "6", "18"]


def test_info_reports_a_broken_file(tiny_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tiny_root / "LymphoMNIST" / "raw" / "test_labels").write_bytes(b"\x00\x00\x08")
    assert main(["data", "info", "--root", str(tiny_root)]) == 1
    assert "problem:" in capsys.readouterr().out


def test_download_from_local_mirror(tiny_root: Path, tmp_path: Path, no_internet: None,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    root = tmp_path / "dl"
    assert main(["data", "download", "--root", str(root), "--mirror", str(tmp_path / "nope"),
                 "--mirror", str(tiny_root)]) == 0
    assert str(root / "LymphoMNIST" / "raw") in capsys.readouterr().out
    assert len(lm.LymphoMNIST(root)) == 30


def test_download_failure_is_one_line(tmp_path: Path, no_internet: None, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert main(["data", "download", "--root", str(tmp_path), "--mirror", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lymphosort: error: could not download LymphoMNIST") and "\n" not in err
    assert "--mirror URL_OR_PATH" in err


def test_synth_passes_its_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    fake = types.ModuleType("lymphosort.data.synth")
    fake.write_lymphomnist = lambda root, **kw: calls.append({"root": root, **kw}) or Path(root)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lymphosort.data.synth", fake)
    assert main(["data", "synth", "--root", str(tmp_path), "--n-train", "7", "--seed", "3", "--preset", "hard"]) == 0
    assert calls == [{"root": tmp_path, "n_train": 7, "n_test": INFO["n_test"], "seed": 3, "preset": "hard"}]


def test_synth_writes_a_loadable_set(tmp_path: Path) -> None:
    pytest.importorskip("lymphosort.data.synth")
    assert main(["data", "synth", "--root", str(tmp_path), "--n-train", "30", "--n-test", "12", "--seed", "1"]) == 0
    assert lm.read_provenance(tmp_path)["source"] == "simulated"
    assert len(lm.load_split(tmp_path, "train")) == 30
    assert len(lm.load_split(tmp_path, "val")) + len(lm.load_split(tmp_path, "test")) == 12


def test_show_writes_one_row_per_class(tiny_root: Path, tmp_path: Path) -> None:
    three, two = tmp_path / "three.png", tmp_path / "sub" / "two.png"
    assert main(["data", "show", "--root", str(tiny_root), "--out", str(three), "--n", "4"]) == 0
    assert main(["data", "show", "--root", str(tiny_root), "--out", str(two), "--n", "4", "--task", "t4-vs-b"]) == 0
    with Image.open(three) as a, Image.open(two) as b:
        assert a.format == "PNG" and b.format == "PNG"
        assert a.height > b.height  # 3 rows vs 2
        assert np.asarray(a.convert("L")).std() > 10  # images were drawn, not a blank canvas

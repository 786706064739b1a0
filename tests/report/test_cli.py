from __future__ import annotations

from pathlib import Path

import pytest

from lymphosort.cli import main


def test_cli_rebuilds_report(full_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (full_run / "report.html").write_text("stale")
    assert main(["report", str(full_run)]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "report.md" in out and "not run:" not in out
    assert (full_run / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_cli_names_stages_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.report.helpers import make_run

    run = make_run(tmp_path / "r", stages=["data"])
    assert main(["report", str(run)]) == 0
    assert "not run: teacher, students" in capsys.readouterr().out


def test_cli_missing_folder_is_one_readable_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "is not a run folder" in capsys.readouterr().err

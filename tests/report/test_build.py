from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lymphosort.report import build_report
from lymphosort.report import format as f
from lymphosort.report.build import SECTIONS, STAGE_NAMES
from tests.report.helpers import N_IMAGES_FULL, make_run, png, record

TITLES = [title for title, _ in SECTIONS.values()]


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_full_report_has_every_section_number_and_image(full_run: Path) -> None:
    html_path, md_path = build_report(full_run)
    assert (html_path, md_path) == (full_run / "report.html", full_run / "report.md")
    html, md = html_path.read_text(), md_path.read_text()
    for title in TITLES:
        assert f">{title}<" in html
        assert f"## {title}" in md
    assert "not run" not in html.split("<footer>")[0].replace("done", "")  # every stage ran
    for text in (
        "93.21% [92.10%, 94.30%]",  # teacher accuracy + interval
        "0.9877",  # teacher ROC-AUC (4 decimals)
        "91.57% [90.12%, 92.88%]",  # student accuracy
        "23,456", "1.23 M", "0.087 ms", "49.7x / 120.3x", "-1.65 pp",  # params, MACs, latency, speed-up
        "65.43% [60.01%, 70.02%]", "0.4200", "70.12% [65.00%, 75.00%]", "1.7000", "5.00% / 2.34%", "61.11%",  # zero-shot
        "71.23% [66.00%, 75.00%]", "88.99%",  # few-shot rows
        "90.89%", "-0.68 pp", "99.95%", "tiny-32 (kd, 8-bit QAT) (8 bits)",  # QAT, change, emulation agreement
        "7.89 us", "1,578 cycles", "200 MHz", "4,321",  # FPGA estimate
        "123.4 us", "2,345.6 /s", "99.12%", "87.65%", "12,000",  # realtime
        "1,500",  # embedding points
        "split-a1b2", "300", "111",  # data card
    ):
        assert text in html, text
        assert f.NA not in text
    assert "streaming dataflow: one pixel per cycle (stated model)" in html
    assert "estimate until the design is synthesised" in _section(html, "fpga")
    # the simulated-data banner, and every data section says which data
    assert 'class="banner simulated"' in html and "SIMULATED DATA" in html and "preset default" in html
    for sid in ("data", "models", "transfer", "quant", "fpga", "realtime", "embedding"):
        assert "Data: simulated (LymphoSim, preset default, seed 7), split id split-a1b2" in _section(html, sid)
    # images: all embedded, none linked; Markdown links resolve relative to the .md
    assert html.count('<img src="data:image/png;base64,') == N_IMAGES_FULL
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == N_IMAGES_FULL
    assert "stages/data/samples.png" in links
    assert all((md_path.parent / link).is_file() for link in links)


def test_outputs_given_as_json_files_instead_of_inline(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", stages=["data", "teacher", "transfer", "realtime"])
    for stage, key, name in (("teacher", "metrics", "metrics.json"), ("realtime", "report", "realtime.json"),
                             ("transfer", "zero_shot", "zs.json")):
        rec = json.loads((run / "stages" / stage / "stage.json").read_text())
        (run / "stages" / stage / name).write_text(json.dumps(rec["outputs"][key]))
        rec["outputs"][key] = f"stages/{stage}/{name}"
        record(run, stage, rec["outputs"])
    html = build_report(run)[0].read_text()
    for text in ("93.21% [92.10%, 94.30%]", "123.4 us", "65.43% [60.01%, 70.02%]"):
        assert text in html


def test_only_data_stage_builds_with_not_run_sections(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", stages=["data"])
    html_path, md_path = build_report(run)
    html, md = html_path.read_text(), md_path.read_text()
    assert html.count('<img src="data:') == 1  # the sample grid
    for sid in ("curves", "models", "transfer", "quant", "fpga", "realtime", "embedding"):
        assert "Stage not run" in _section(html, sid), sid
    assert "Stage not run" not in _section(html, "data")
    assert md.count("**Not run.**") == 7
    assert "SIMULATED DATA" in md


def test_empty_folder_builds_with_unknown_provenance(tmp_path: Path) -> None:
    html = build_report(tmp_path)[0].read_text()
    assert 'class="banner unknown"' in html
    assert html.count("Stage not run") == len(STAGE_NAMES) + 1  # data stage feeds one section each


def test_unfinished_or_corrupt_records_read_as_not_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", stages=["data", "teacher", "embedding"])
    record(run, "teacher", {"metrics": "stages/teacher/run/metrics.json"}, status="running")
    (run / "stages" / "embedding" / "stage.json").write_text("{not json")
    html = build_report(run)[0].read_text()
    assert "status is &#x27;running&#x27;, not finished" in _section(html, "models")
    assert "Stage not run" in _section(html, "embedding") and "unreadable" in _section(html, "embedding")
    assert "93.21%" not in html  # an unfinished stage's numbers are not shown


def test_malicious_names_are_escaped(tmp_path: Path) -> None:
    evil = '<script>alert("x")</script>'
    label = '<img src=x onerror=alert(1)>|*bold*'
    run = make_run(tmp_path / "run", classes=("B", evil, "T8"), student_label=label)
    html_path, md_path = build_report(run)
    html, md = html_path.read_text(), md_path.read_text()
    assert "<script" not in html and "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script" not in md and "<img" not in md
    assert "&lt;script&gt;" in md
    row = next(line for line in md.splitlines() if "onerror" in line and line.startswith("| "))
    assert "\\|\\*bold\\*" in row  # a pipe in a name cannot split the table row


def test_missing_and_non_image_files_are_reported_not_embedded(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", stages=["data", "embedding"])
    (run / "stages" / "embedding" / "tsne.png").unlink()
    secret = run / "secret.txt"
    secret.write_text("top secret text")
    data = json.loads((run / "stages" / "data" / "stage.json").read_text())
    data["outputs"]["sample_grid"] = "secret.txt"
    record(run, "data", data["outputs"])
    html, md = (p.read_text() for p in build_report(run))
    assert "<img" not in html
    assert "image missing or not a PNG/JPEG (stages/embedding/tsne.png)" in html
    assert "image missing or not a PNG/JPEG (secret.txt)" in html
    assert "dG9wIHNlY3JldCB0ZXh0" not in html  # base64 of the text file
    assert "](secret.txt)" not in md


def test_paths_written_relative_to_cwd_or_absolute_still_resolve(tmp_path: Path) -> None:
    run = make_run(tmp_path / "copied" / "run", stages=["data"])
    data = json.loads((run / "stages" / "data" / "stage.json").read_text())
    # as the pipeline writes them today with `--out runs/x`: relative to the working folder,
    # or absolute on the machine that ran it
    data["outputs"]["sample_grid"] = "/elsewhere/runs/x/stages/data/samples.png"
    record(run, "data", data["outputs"])
    html = build_report(run)[0].read_text()
    assert html.count('<img src="data:image/png') == 1


def test_bad_section_input_costs_only_that_section(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", stages=["data", "realtime"])
    record(run, "realtime", {"report": {"p99_latency_us": "fast", "frames": [1, 2]}, "histogram": 3})
    html = build_report(run)[0].read_text()
    rt = _section(html, "realtime")
    assert "n/a" in rt  # odd values show as n/a instead of crashing
    assert "SIMULATED DATA" in html


def test_data_stage_of_the_pipeline_reports(tmp_path: Path, tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real data stage's record (pipeline.stage_data through run_stages, run folder given
    relative to the working directory as `--out runs/x` does) renders."""
    from lymphosort import pipeline

    monkeypatch.chdir(tmp_path)
    run = Path("runs") / "x"
    stage = pipeline.Stage("data", pipeline.stage_data, ("data",))
    pipeline.run_stages([stage], run, {"data": {}}, options={"data_root": str(tiny_root)}, console=lambda s: None)
    html = build_report(run)[0].read_text()
    assert html.count('<img src="data:image/png') == 1
    assert "Data: simulated (LymphoSim, preset test, seed 0)" in html
    splits = json.loads((run / "stages" / "data" / "stage.json").read_text())["outputs"]["splits"]
    assert sum(s["n"] for s in splits.values()) == 30 + 24  # the tiny set: 30 train, 24 test (val from test)
    for name, s in splits.items():
        assert f"<tr><td>{name}</td><td class=\"n\">{s['n']}</td>" in html


@pytest.mark.parametrize(
    ("fn", "args", "want"),
    [
        (f.pct, (0.93214,), "93.21%"),
        (f.pct, (None,), "n/a"),
        (f.pct, (float("nan"),), "n/a"),
        (f.pct_ci, (0.5, [0.25, 0.75]), "50.00% [25.00%, 75.00%]"),
        (f.pct_ci, (0.5, None), "50.00%"),
        (f.num_ci, (0.98765, [0.9, 1.0]), "0.9877 [0.9000, 1.0000]"),
        (f.count, (1234567,), "1,234,567"),
        (f.si, (1_234_567,), "1.23 M"),
        (f.points, (-1.6465,), "-1.65 pp"),
        (f.ratio, (True,), "n/a"),
    ],
)
def test_formatting(fn, args, want) -> None:  # type: ignore[no-untyped-def]
    assert fn(*args) == want

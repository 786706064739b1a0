"""BENCHMARKS.md generation: rendering, ordering, schema errors and the CI drift check."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import make_tables as mt  # noqa: E402


def _aim(**over: Any) -> dict[str, Any]:
    aim = {"area": "teacher", "aim": "teacher accuracy", "target": ">= 96%", "value": 96.4,
           "interval": [95.9, 96.9], "unit": "%", "met": True, "data": "LymphoSim 3.0 default (simulated)",
           "command": "lymphosort train --model compact-teacher", "machine": "2-core build VM, CPU"}
    aim.update(over)
    return aim


def _write(root: Path, rel: str, doc: Any) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _run(results: Path, out: Path, *extra: str) -> int:
    readme = [] if "--readme" in extra else ["--readme", "none"]
    return mt.main(["--results", str(results), "--out", str(out), *readme, *extra])


def test_headline_row_renders_value_interval_unit_and_verdict(tmp_path: Path) -> None:
    _write(tmp_path, "teacher.json", {"aims": [_aim()]})
    text = mt.render(*mt.collect(tmp_path))
    row = next(line for line in text.splitlines() if line.startswith("| teacher |"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells == ["teacher", "teacher accuracy", ">= 96%", "96.4% (95.9% to 96.9%)", "yes",
                     "LymphoSim 3.0 default (simulated)", "`lymphosort train --model compact-teacher`",
                     "2-core build VM, CPU"]
    assert "## History" in text


def test_not_measured_never_shows_a_value(tmp_path: Path) -> None:
    _write(tmp_path, "rt.json", {"aims": [_aim(area="real time", value=None, interval=None, met=None)]})
    row = next(line for line in mt.render(*mt.collect(tmp_path)).splitlines() if line.startswith("| real time"))
    assert "| not measured yet | — |" in row


def test_pipes_in_commands_do_not_split_cells(tmp_path: Path) -> None:
    _write(tmp_path, "d.json", {"aims": [_aim(area="data", command="cat x | wc -l", unit="x", value=3, interval=None)]})
    row = next(line for line in mt.render(*mt.collect(tmp_path)).splitlines() if line.startswith("| data"))
    assert "`cat x \\| wc -l`" in row and "| 3x |" in row


def test_order_is_data_flow_then_file_then_position_and_history_is_skipped(tmp_path: Path) -> None:
    _write(tmp_path, "a_rt.json", {"aims": [_aim(area="real time", aim="rt")]})
    _write(tmp_path, "b_students.json", {"aims": [_aim(area="students", aim="s2")]})
    _write(tmp_path, "a_students.json", {"aims": [_aim(area="students", aim="s1b"), _aim(area="students", aim="s1a")]})
    _write(tmp_path, "sub/data.json", {"aims": [_aim(area="data", aim="d")]})
    _write(tmp_path, "v1/old.json", {"aims": [_aim(aim="old v1")]})
    _write(tmp_path, "v2.0/old.json", {"aims": [_aim(aim="old v2")]})
    _write(tmp_path, "x/history/old.json", {"aims": [_aim(aim="old history")]})
    _write(tmp_path, "plain.json", {"rows": [{"nested": {"not": "rendered"}}]})  # no aims: not tabulated
    aims, _ = mt.collect(tmp_path)
    assert [a.aim for a in aims] == ["d", "s1b", "s1a", "s2", "rt"]


def test_extra_rows_render_under_their_area_with_caption(tmp_path: Path) -> None:
    _write(tmp_path, "kd.json", {"aims": [_aim(area="students")], "caption": "KD methods, 3 seeds",
                                 "rows": [{"method": "none", "acc": 0.9}, {"method": "kd", "acc": 0.93, "note": "best"}]})
    text = mt.render(*mt.collect(tmp_path))
    section = text.split("## Students", 1)[1].split("## History", 1)[0]
    assert "KD methods, 3 seeds ([source](benchmarks/results/kd.json))" in section
    assert "| method | acc | note |" in section
    assert "| none | 0.9 | — |" in section and "| kd | 0.93 | best |" in section


@pytest.mark.parametrize(("doc", "message"), [
    ({"aims": [{k: v for k, v in _aim().items() if k != "command"}]}, "bad.json: aims[0]: missing key(s) 'command'"),
    ({"aims": [_aim(area="lab")]}, "bad.json: aims[0]: 'area' 'lab' is not one of"),
    ({"aims": [_aim(met="yes")]}, "'met' must be true, false or null"),
    ({"aims": [_aim(met=None)]}, "'value' is set but 'met' is null"),
    ({"aims": [_aim(value=None)]}, "'value' must be a number or text when 'met' is True"),
    ({"aims": [_aim(interval=[2, 1])]}, "'interval' lo > hi"),
    ({"aims": [_aim(speed=1)]}, "unknown key(s) 'speed'"),
    ({"aims": []}, "bad.json: 'aims' must be a non-empty list"),
    ({"aims": [_aim()], "rows": [{"a": 1}]}, "bad.json: 'caption' must be non-empty text"),
    ({"aims": [_aim()], "caption": "c", "rows": [{"a": [1]}]}, "rows[0]['a'] must be a number"),
    ({"aims": [_aim(), _aim(area="data")], "caption": "c", "rows": [{"a": 1}]}, "needs a top-level 'area'"),
])
def test_schema_errors_name_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         doc: dict[str, Any], message: str) -> None:
    _write(tmp_path, "res/bad.json", doc)
    assert _run(tmp_path / "res", tmp_path / "B.md") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "B.md").exists()


def test_check_passes_when_current_and_fails_with_diff_on_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, out = tmp_path / "res", tmp_path / "BENCHMARKS.md"
    _write(results, "t.json", {"aims": [_aim()]})
    assert _run(results, out, "--check") == 1  # nothing committed yet
    assert _run(results, out) == 0
    assert _run(results, out, "--check") == 0
    _write(results, "t.json", {"aims": [_aim(value=97.1)]})
    capsys.readouterr()
    assert _run(results, out, "--check") == 1
    diff = capsys.readouterr().out
    assert "-| teacher | teacher accuracy | >= 96% | 96.4%" in diff
    assert "+| teacher | teacher accuracy | >= 96% | 97.1%" in diff


def test_a_rows_only_file_is_a_table_and_needs_its_area(tmp_path: Path) -> None:
    res = tmp_path / "results"
    res.mkdir()
    (res / "classical.json").write_text(json.dumps(
        {"area": "data", "caption": "Classical baselines", "rows": [{"crops": 2000, "knn": 40.9}]}))
    aims, tables = mt.collect(res)
    assert aims == [] and [t.caption for t in tables] == ["Classical baselines"] and tables[0].area == "data"
    (res / "classical.json").write_text(json.dumps({"caption": "Classical", "rows": [{"crops": 1}]}))
    with pytest.raises(mt.SchemaError, match="area"):
        mt.collect(res)


def test_readme_headline_block_is_replaced_between_markers_and_checked(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    results, out, readme = tmp_path / "res", tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    _write(results, "t.json", {"aims": [_aim()]})
    readme.write_text(f"# Tool\n\nIntro.\n\n{mt.README_START}\nold table\n{mt.README_END}\n\n## Later\n")
    assert _run(results, out, "--readme", str(readme), "--check") == 1  # the old table is stale
    assert _run(results, out, "--readme", str(readme)) == 0
    text = readme.read_text()
    assert text.startswith("# Tool\n\nIntro.\n\n") and text.endswith("\n\n## Later\n") and "old table" not in text
    assert "| teacher | teacher accuracy | >= 96% | 96.4%" in text
    assert _run(results, out, "--readme", str(readme), "--check") == 0
    readme.write_text("# Tool without markers\n")
    capsys.readouterr()
    assert _run(results, out, "--readme", str(readme)) == 2
    assert "markers" in capsys.readouterr().err

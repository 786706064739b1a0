"""The seed table reads what real runs wrote, and refuses runs tested on other crops."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import seed_table  # noqa: E402

from lymphosort.cli import main as cli  # noqa: E402
from tests.conftest import write_tiny_lymphomnist  # noqa: E402


def _train(root: Path, out: Path, seed: int) -> Path:
    assert cli(["train", "--model", "tiny-64", "--data-root", str(root), "--out", str(out), "--epochs", "2",
                "--batch-size", "8", "--seed", str(seed), "--patience", "0", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two seeds on one tiny data set, and one run on another (trained once per module)."""
    tmp = tmp_path_factory.mktemp("seed_table")
    roots = {"same": tmp / "root", "other": tmp / "other"}
    write_tiny_lymphomnist(roots["same"], provenance={"source": "simulated", "preset": "test", "seed": 0})
    write_tiny_lymphomnist(roots["other"], n_test=30, seed=5, provenance={"source": "simulated", "preset": "test", "seed": 5})
    return {"s0": _train(roots["same"], tmp / "s0", 0), "s1": _train(roots["same"], tmp / "s1", 1),
            "other": _train(roots["other"], tmp / "o", 0)}


def test_seed_table_from_real_runs(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a0, a1 = runs["s0"], runs["s1"]
    b0 = a1  # a group may share a run with another: a = {s0, s1} vs b = {s1}
    out = tmp_path / "t.json"
    assert seed_table.main(["--group", f"a={a0},{a1}", "--group", f"b={b0}", "--baseline", "b",
                            "--n-boot", "50", "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    acc = {r: json.loads((r / "metrics.json").read_text())["accuracy"] for r in (a0, a1)}
    a, b = table["groups"]["a"], table["groups"]["b"]
    assert [r["accuracy"] for r in a["runs"]] == [acc[a0], acc[a1]] and [r["seed"] for r in a["runs"]] == [0, 1]
    assert a["mean_accuracy"] == pytest.approx((acc[a0] + acc[a1]) / 2)
    hist = json.loads((a0 / "history.json").read_text())
    best = max(hist, key=lambda h: h["val_bacc"])
    assert (a["runs"][0]["best_val"], a["runs"][0]["best_epoch"], a["runs"][0]["last_epoch"]) == (best["val_bacc"], best["epoch"], 2)
    d = a["vs_baseline"]
    assert d["difference"] == pytest.approx(a["mean_accuracy"] - acc[b0])
    assert d["per_seed"] == pytest.approx([acc[a0] - acc[b0]])
    assert d["interval"][0] <= d["difference"] <= d["interval"][1]
    assert "vs_baseline" not in b and table["data"]["split_id"]
    assert "a - b: mean" in capsys.readouterr().out


def test_seed_table_refuses_incomparable_runs(runs: dict[str, Path]) -> None:
    a, b = runs["s0"], runs["other"]
    with pytest.raises(SystemExit, match="other crops|split"):
        seed_table.main(["--group", f"a={a}", "--group", f"b={b}", "--n-boot", "10"])
    with pytest.raises(SystemExit, match="evaluate it"):
        seed_table.main(["--group", f"a={a}", "--task", "t8-vs-b"])
    with pytest.raises(SystemExit, match="not a group"):
        seed_table.main(["--group", f"a={a}", "--baseline", "c"])


def test_seed_table_caption_writes_a_row_table(runs: dict[str, Path], tmp_path: Path) -> None:
    a0, a1 = runs["s0"], runs["s1"]
    out = tmp_path / "t.json"
    assert seed_table.main(["--group", f"a={a0},{a1}", "--group", f"b={a1}", "--baseline", "b", "--n-boot", "50",
                            "--caption", "a proxy", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert "aims" not in doc and doc["area"] == "students" and doc["caption"].startswith("a proxy (LymphoSim ")
    a, b = doc["rows"]
    d = doc["groups"]["a"]["vs_baseline"]
    assert (a["setting"], a["runs"], b["setting"], b["runs"]) == ("a", 2, "b", 1)
    assert a["mean test accuracy (%)"] == round(100 * doc["groups"]["a"]["mean_accuracy"], 2)
    assert a["minus b (points)"] == round(100 * d["difference"], 2) and b["minus b (points)"] is None
    lo, hi = (float(x) for x in a["95% interval"].split(" to "))
    assert lo <= a["minus b (points)"] <= hi
    with pytest.raises(SystemExit):  # a caption without a baseline has nothing to read the differences against
        seed_table.main(["--group", f"a={a0}", "--caption", "x"])

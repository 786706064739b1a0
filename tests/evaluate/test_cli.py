"""`lymphosort evaluate` on a tiny fake run (untrained tiny model) and tiny IDX data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from lymphosort.cli import main
from lymphosort.errors import ConfigError
from lymphosort.evaluate.run import evaluate_run
from lymphosort.models import create_model
from lymphosort.models.checkpoint import ModelCard, save_checkpoint


def _fake_run(run: Path, name: str = "tiny-32", classes: tuple[str, ...] = ("B", "T"), task: str = "t4-vs-b",
              **card: object) -> Path:
    torch.manual_seed(0)
    model = create_model(name, num_classes=len(classes))
    save_checkpoint(run, model, ModelCard.from_model(model, task=task, classes=list(classes), **card))
    return run


def test_evaluate_run_writes_metrics_and_plots(tmp_path: Path, tiny_root: Path) -> None:
    run = _fake_run(tmp_path / "run")
    r = evaluate_run(run, "t8-vs-b", tiny_root, "test", tmp_path / "out", n_boot=50, threads=1)
    out = tmp_path / "out"
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("task", "data", "n", "accuracy", "balanced_accuracy", "f1", "roc_auc", "ece", "confusion",
                "intervals", "params", "macs", "cpu_latency_ms"):
        assert key in saved, key
    assert saved["task"] == "t8-vs-b" and saved["model_task"] == "t4-vs-b"
    assert saved["data"]["source"] == "simulated" and saved["data"]["split_id"]
    assert saved["n"] == sum(map(sum, saved["confusion"])) and saved["n"] == r["n"] > 0
    assert saved["params"] == 4778 and saved["macs"] > 0
    assert set(saved["cpu_latency_ms"]) == {"1", "256"} and all(v > 0 for v in saved["cpu_latency_ms"].values())
    for png in ("roc.png", "confusion.png", "reliability.png"):
        with Image.open(out / png) as im:
            im.verify()
    assert (out / "predictions.npz").is_file()


def test_cli_default_out_and_class_mismatch(tmp_path: Path, tiny_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _fake_run(tmp_path / "run3", "tiny-32", ("B", "T4", "T8"), "3-class")
    rc = main(["evaluate", str(run), "--task", "3-class", "--data-root", str(tiny_root), "--split", "val",
               "--n-boot", "20", "--no-latency"])
    assert rc == 0
    saved = json.loads((run / "eval" / "3-class-val" / "metrics.json").read_text())
    assert len(saved["confusion"]) == 3 and "cpu_latency_ms" not in saved
    assert "tiny-32 on 3-class val" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="3 outputs"):
        evaluate_run(run, "t4-vs-b", tiny_root, n_boot=0, latency=False)
    # Through the console script the error is one line and exit status 2.
    assert main(["evaluate", str(run), "--task", "t4-vs-b", "--data-root", str(tiny_root), "--no-latency"]) == 2
    assert "3 outputs" in capsys.readouterr().err


@pytest.mark.parametrize("card", [{"data": {"source": "simulated", "root": "ROOT"}}, {"config": {"data_root": "ROOT"}}],
                         ids=["card-data-root", "old-card-config"])
def test_cli_without_data_root_uses_the_root_the_card_records(
    tmp_path: Path, tiny_root: Path, capsys: pytest.CaptureFixture[str], card: dict
) -> None:
    card = json.loads(json.dumps(card).replace("ROOT", str(tiny_root)))
    run = _fake_run(tmp_path / "run", **card)
    assert main(["evaluate", str(run), "--task", "t4-vs-b", "--n-boot", "0", "--no-latency"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"data root: {tiny_root} (recorded in {run / 'model.json'})"
    saved = json.loads((run / "eval" / "t4-vs-b-test" / "metrics.json").read_text())
    assert saved["data"]["root"] == str(tiny_root) and saved["n"] > 0


def test_cli_without_data_root_or_record_says_it_uses_the_default(
    tmp_path: Path, tiny_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lymphosort.evaluate.run as ev

    run = _fake_run(tmp_path / "run")
    monkeypatch.setattr(ev, "DEFAULT_DATA_ROOT", tiny_root)
    assert main(["evaluate", str(run), "--task", "t4-vs-b", "--n-boot", "0", "--no-latency"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"data root: {tiny_root} (the default: {run / 'model.json'} records no data root)")
    # An explicit --data-root wins and is not announced.
    other = _fake_run(tmp_path / "other", data={"root": str(tmp_path / "elsewhere")})
    assert main(["evaluate", str(other), "--task", "t4-vs-b", "--data-root", str(tiny_root), "--n-boot", "0",
                 "--no-latency"]) == 0
    assert not capsys.readouterr().out.startswith("data root:")

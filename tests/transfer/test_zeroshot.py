"""Zero-shot T8 vs B: label reading, operating point from val, temperature scaling."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from lymphosort.data.info import TaskView
from lymphosort.errors import ConfigError
from lymphosort.transfer.zeroshot import (
    ZeroShotConfig,
    apply_threshold,
    check_readable,
    fit_temperature,
    sweep_threshold,
    zero_shot,
)


def test_t4_model_reads_t8_as_t(t4_run: Path, disc_root: Path, tmp_path: Path) -> None:
    r = zero_shot(t4_run, ZeroShotConfig("t8-vs-b", str(disc_root), n_boot=50, latency=False), tmp_path / "zs")
    assert r["accuracy"] >= 0.9 and r["roc_auc"] >= 0.95
    written = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    z = written["zero_shot"]
    assert z["source_task"] == "t4-vs-b" and written["task"] == "t8-vs-b"
    assert z["operating_point"]["chosen_on"] == "val" and 0.0 <= z["operating_point"]["threshold"] <= 1.0
    assert z["calibration"]["temperature"] > 0
    # Temperature scaling never makes validation NLL worse (it is fitted there; T=1 is a candidate).
    assert z["calibration"]["val_nll"]["after"] <= z["calibration"]["val_nll"]["before"] + 1e-9
    assert (tmp_path / "zs" / "threshold.png").stat().st_size > 0


def test_the_runs_own_data_root_is_the_default(t4_run: Path, disc_root: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No --data-root: the data the run was trained on (its model card), not whatever sits at
    the default root (a stale simulator version there once gave a wrong zero-shot row)."""
    monkeypatch.chdir(tmp_path)  # the default root (data/lymphosim) does not exist here
    r = zero_shot(t4_run, ZeroShotConfig("t8-vs-b", n_boot=0, latency=False), tmp_path / "zs")
    assert r["zero_shot"]["config"]["data_root"] == str(disc_root) and r["n"] > 0


@pytest.mark.parametrize("wrong", [{0: 0, 2: 0}, {0: 1, 2: 0}], ids=["t8-read-as-b", "swapped"])
def test_a_wrong_label_mapping_fails_the_accuracy_check(
    t4_run: Path, disc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wrong: dict[int, int]
) -> None:
    """The same check as above, with T8 mapped wrongly, falls far below its 0.9 bar."""
    import lymphosort.data.lymphomnist as lm

    bad = TaskView("t8-vs-b", ("B", "T"), MappingProxyType(wrong), "wrong on purpose")
    monkeypatch.setattr(lm, "task_view", lambda name: bad)
    r = zero_shot(t4_run, ZeroShotConfig("t8-vs-b", str(disc_root), n_boot=0, latency=False), tmp_path / "zs")
    assert r["accuracy"] < 0.6


def test_unreadable_class_sets_are_refused() -> None:
    check_readable(("B", "T"), ("B", "T"))
    with pytest.raises(ConfigError, match="finetune"):
        check_readable(("B", "T"), ("B", "T4", "T8"))


def test_threshold_is_chosen_on_val_scores() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 500)
    # Class-1 scores sit above 0.7, class-0 below: 0.5 misclassifies many, the sweep does not.
    score = np.where(y == 1, rng.uniform(0.72, 1.0, y.size), rng.uniform(0.0, 0.68, y.size))
    t = sweep_threshold(y, score)
    assert 0.68 <= t <= 0.72
    probs = np.stack([1 - score, score], 1)
    pred = apply_threshold(probs, t).argmax(1)
    assert (pred == y).all()
    # Ranks are unchanged by the shift (ROC-AUC of the operating point is the model's).
    assert np.array_equal(np.argsort(apply_threshold(probs, t)[:, 1], kind="stable"), np.argsort(score, kind="stable"))


def test_temperature_recovers_overconfidence() -> None:
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 2, size=(4000, 2))
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    y = (rng.random(4000) < p[:, 1]).astype(int)
    assert fit_temperature(true_logits * 3.0, y) == pytest.approx(3.0, rel=0.15)

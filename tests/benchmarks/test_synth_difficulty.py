"""The difficulty tools: the pixel-cue probe sees a trait that raw pixels show, and the
classical baselines run a named subset."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import synth_difficulty  # noqa: E402

from lymphosort.data.synth.presets import with_trait_means  # noqa: E402


def test_pixel_cues_see_a_loud_trait_and_floor_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # only two traits probed, for time: a very rough T4 outline, and the aspect (B's in every class here)
    monkeypatch.setattr(synth_difficulty, "TRAITS", ("roughness", "aspect"))
    loud = with_trait_means("default", {"T4.roughness": "0.2:0.01", "T8.roughness": "0.2:0.01", "T4.aspect": 1.02,
                                        "T8.aspect": 1.02})
    out = synth_difficulty.pixel_cues(loud, 240, seed=0, folds=3)
    assert set(out) == {"none", "roughness", "aspect"}
    assert out["roughness"] > out["none"] + 0.15
    assert abs(out["aspect"] - out["none"]) < 0.1  # the same traits in every class: nothing to see


def test_classical_baselines_run_the_named_models_only() -> None:
    res = synth_difficulty.classical_baselines("easy", [60], seed=0, folds=2, models=["knn"])
    row = res["60"]
    assert set(row) == {"class_shares", "knn"} and 0.0 <= row["knn"]["accuracy"] <= 1.0
    tables = synth_difficulty.with_tables({"preset": "easy", "version": "3.3", "command": "c", "results": res})
    assert "aims" not in tables and tables["rows"][0] == {"crops": 60, "knn": round(100 * row["knn"]["accuracy"], 1)}

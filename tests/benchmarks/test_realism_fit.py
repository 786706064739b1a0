"""The moment fit's pieces: its parameter box maps to ReliefRanges, and its loss sees a mismatch."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import realism_fit  # noqa: E402

from lymphosort.data.realism import resample_set  # noqa: E402
from lymphosort.data.synth import get_preset, render_crops  # noqa: E402


def test_space_starts_at_the_base_and_moves_by_factors() -> None:
    base = get_preset("default").sessions
    space = realism_fit.Space(base, ("relief", "grain_path", "nucleus_absorb"))
    assert [kind for _, kind in space.slots] == ["mid", "half", "value", "value"]
    at0 = space.ranges(np.zeros(len(space.slots)))
    assert at0.relief == pytest.approx(base.relief) and at0.grain_path == pytest.approx(base.grain_path)
    up = space.values(np.array([0.0, 0.0, 0.0, 1.0]))
    # a scalar moves by SPAN ** x; its sign is kept (the nucleus weight is negative)
    assert up["nucleus_absorb"] == pytest.approx(base.nucleus_absorb * realism_fit.SPAN)
    wide = space.values(np.array([0.0, 1.0, 0.0, 0.0]))["relief"]  # the half-width grows about the same mid
    assert sum(wide) / 2 == pytest.approx(sum(base.relief) / 2) and wide[1] - wide[0] > base.relief[1] - base.relief[0]


def test_loss_is_small_for_the_same_model_and_grows_with_a_mismatch() -> None:
    pre = get_preset("default")
    ref, _, _ = render_crops(96, seed=5, preset=pre)
    feats, table = realism_fit._features(resample_set(list(ref), 59))
    obj = realism_fit.Objective(feats, table, pre, 96, seed=6)  # another draw of the same model
    same = obj.parts(pre.sessions)
    off = obj.parts(replace(pre.sessions, relief=(0.5, 0.6), read_noise=(3.0, 4.0)))  # ~2.5x relief, noisy
    assert same["mahalanobis2"] < 1.0 and same["worst_stat_sd"] < 0.5
    assert off["mahalanobis2"] > 5 * same["mahalanobis2"] and off["stat_penalty"] > 0


def test_directions_find_a_broken_coupling() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 1))
    ref = np.hstack([a, a + 0.1 * rng.standard_normal((400, 1)), rng.standard_normal((400, 2))])  # f0, f1 coupled
    same = realism_fit.directions(ref, ref.copy(), ["f0", "f1", "f2", "f3"])
    assert same["mahalanobis2"] < 1e-9
    sim = ref.copy()
    sim[:, 1] = sim[:, 0] - 0.3  # the coupling holds in shape but f1 sits 0.3 lower: small alone, large jointly
    out = realism_fit.directions(ref, sim, ["f0", "f1", "f2", "f3"], top=2)
    first = out["directions"][0]
    assert out["mahalanobis2"] > 1.0 and first["share"] > 0.9 and first["eigenvalue"] < 0.1
    assert set(list(first["features"])[:2]) == {"f0", "f1"}

"""Efficiency helpers: exact counts on a hand-checkable network; latency structure only."""

from __future__ import annotations

import time

import pytest
import torch

from lymphosort.evaluate.efficiency import _interleaved, count_macs, count_params, measure_latency
from lymphosort.models import create_model


def test_paper_student2_counts() -> None:
    m = create_model("paper-student2")
    assert count_params(m) == 5682
    # conv1 46*46*16*9 + conv2 21*21*16*16*9 + linear 1600*2 (one MAC per multiply-add).
    assert count_macs(m) == 46 * 46 * 16 * 9 + 21 * 21 * 16 * 16 * 9 + 1600 * 2
    assert count_macs(m, 48) == count_macs(m)
    m.head.weight.requires_grad_(False)
    assert count_params(m, trainable_only=True) == 5682 - 3200
    assert m.training  # mode restored after counting


def test_measure_latency_structure() -> None:
    models = {"a": create_model("tiny-32"), "b": create_model("paper-student2")}
    before = torch.get_num_threads()
    out = measure_latency(models, batch_sizes=(1, 4), threads=1, warmup=1, repeats=3)
    assert torch.get_num_threads() == before
    assert out["threads"] == 1 and out["repeats"] == 3 and out["device"] == "cpu" and out["burst"] == 5
    for name in models:
        for bs in (1, 4):
            r = out["models"][name][bs]
            assert r["median_ms"] > 0 and r["min_ms"] > 0 and r["ms_per_image"] > 0 and r["first_call_median_ms"] > 0
    with pytest.raises(ValueError, match="burst"):
        measure_latency(models, burst=0)


@pytest.mark.parametrize("burst", [1, 2, 5])
def test_interleaved_visits_time_warm_calls_only(burst: int) -> None:
    """A visit is one untimed call then `burst` timed ones; the timed calls exclude the cold
    cost of switching models, which a fake model charges (a 3 ms sleep) here."""
    log: list[str] = []

    def fake(name: str):
        def call() -> None:
            if log and log[-1] != name:
                time.sleep(0.003)  # "caches evicted by the other model"
            log.append(name)
        return call

    times, first = _interleaved({"a": fake("a"), "b": fake("b")}, warmup=2, repeats=7, burst=burst)
    assert [len(times[n]) for n in "ab"] == [7, 7]
    visits = -(-7 // burst)  # ceil
    assert [len(first[n]) for n in "ab"] == [visits, visits]
    assert len(log) == 2 * 2 + 2 * (7 + visits)  # warm-up rounds: one call each
    assert max(max(times["a"]), max(times["b"])) < 3.0  # every timed call was warm
    # the switches landed on the untimed first calls (rounds rotate, so a model that closes
    # one round opens the next one warm: at least half the first calls are cold)
    assert sum(t >= 3.0 for t in first["a"] + first["b"]) >= visits
    # rounds rotate which model goes first
    timed_log, step = log[4:], 1 + min(burst, 7)
    assert timed_log[:step] == ["a"] * step and timed_log[step : 2 * step] == ["b"] * step
    assert timed_log[2 * step] == "b"


def test_measure_latency_in_onnxruntime_side_by_side() -> None:
    pytest.importorskip("onnxruntime")
    models = {"a": create_model("tiny-32-centre"), "b": create_model("paper-student2")}
    out = measure_latency(models, batch_sizes=(1, 2), warmup=1, repeats=3, runtime="onnxruntime")
    assert out["runtime"] == "onnxruntime" and out["threads"] == 1 and "onnxruntime" in out
    for name in models:
        assert all(out["models"][name][bs]["median_ms"] > 0 for bs in (1, 2))
    assert all(m.training for m in models.values())  # modes restored
    with pytest.raises(ValueError, match="runtime"):
        measure_latency(models, runtime="tvm")

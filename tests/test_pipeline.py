"""The stage runner: skip when unchanged, rerun what changed and what depends on it, resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from lymphosort.errors import ConfigError
from lymphosort.pipeline import Stage, StageContext, preset_config, run_stages


def _make_stages(calls: list[str], fail_in: str | None = None) -> list[Stage]:
    def make(name: str):
        def fn(ctx: StageContext):
            calls.append(name)
            if name == fail_in:
                raise RuntimeError("killed")
            upstream = sum(v["value"] for v in ctx.upstream.values())
            (ctx.out_dir / "out.txt").write_text(name)
            return {"value": ctx.config[name]["x"] + upstream}

        return fn

    return [
        Stage("a", make("a"), ("a",)),
        Stage("b", make("b"), ("b",), deps=("a",)),
        Stage("c", make("c"), ("c",)),
    ]


def _config(a=1, b=10, c=100):
    return {"a": {"x": a}, "b": {"x": b}, "c": {"x": c}}


def test_rerun_skips_and_returns_stored_outputs(tmp_path: Path) -> None:
    calls: list[str] = []
    first = run_stages(_make_stages(calls), tmp_path, _config(), console=lambda s: None)
    assert calls == ["a", "b", "c"]
    assert first["b"]["value"] == 11
    calls.clear()
    second = run_stages(_make_stages(calls), tmp_path, _config(), console=lambda s: None)
    assert calls == []
    assert second == first


def test_config_change_reruns_stage_and_dependents_only(tmp_path: Path) -> None:
    calls: list[str] = []
    run_stages(_make_stages(calls), tmp_path, _config(), console=lambda s: None)
    calls.clear()
    out = run_stages(_make_stages(calls), tmp_path, _config(a=2), console=lambda s: None)
    assert calls == ["a", "b"]
    assert out["b"]["value"] == 12


def test_new_simulator_version_reruns_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    run_stages(_make_stages(calls), tmp_path, _config(), console=lambda s: None)
    calls.clear()
    monkeypatch.setattr("lymphosort.data.synth.presets.SIM_VERSION", "99.0")
    run_stages(_make_stages(calls), tmp_path, _config(), console=lambda s: None)
    assert calls == ["a", "b", "c"]


def test_killed_run_resumes_at_first_unfinished_stage(tmp_path: Path) -> None:
    calls: list[str] = []
    with pytest.raises(RuntimeError):
        run_stages(_make_stages(calls, fail_in="b"), tmp_path, _config(), console=lambda s: None)
    assert not (tmp_path / "stages" / "b" / "stage.json").exists()
    calls.clear()
    run_stages(_make_stages(calls), tmp_path, _config(), console=lambda s: None)
    assert calls == ["b", "c"]


def test_partial_outputs_kept_for_same_key_and_dropped_when_config_changes(tmp_path: Path) -> None:
    calls: list[str] = []
    with pytest.raises(RuntimeError):
        run_stages(_make_stages(calls, fail_in="b"), tmp_path, _config(), console=lambda s: None)
    partial = tmp_path / "stages" / "b" / "partial.ckpt"
    partial.write_text("half-trained")
    # Same config: a killed stage finds its partial work again (resume).
    with pytest.raises(RuntimeError):
        run_stages(_make_stages(calls, fail_in="b"), tmp_path, _config(), console=lambda s: None)
    assert partial.exists()
    # Changed config: the partial work belongs to another configuration and is dropped.
    with pytest.raises(RuntimeError):
        run_stages(_make_stages(calls, fail_in="b"), tmp_path, _config(b=11), console=lambda s: None)
    assert not partial.exists()


def test_force_reruns_everything(tmp_path: Path) -> None:
    calls: list[str] = []
    run_stages(_make_stages(calls), tmp_path, _config(), console=lambda s: None)
    calls.clear()
    run_stages(_make_stages(calls), tmp_path, _config(), force=True, console=lambda s: None)
    assert calls == ["a", "b", "c"]


def test_dependency_order_is_checked(tmp_path: Path) -> None:
    stages = list(reversed(_make_stages([])))
    with pytest.raises(ConfigError, match="depends on"):
        run_stages(stages, tmp_path, _config(), console=lambda s: None)


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="quick"):
        preset_config("nope")


def test_a_config_file_changes_preset_sections_and_refuses_unknown_keys() -> None:
    cfg = preset_config("smoke", {"teacher": {"epochs": 4}, "realtime": {"duration": 2.0}})
    assert cfg["teacher"]["epochs"] == 4 and cfg["realtime"]["duration"] == 2.0
    assert cfg["teacher"]["model"] == preset_config("smoke")["teacher"]["model"]  # the rest is the preset's
    with pytest.raises(ConfigError, match="epoch"):
        preset_config("smoke", {"teacher": {"epoch": 4}})
    with pytest.raises(ConfigError, match="sections"):
        preset_config("smoke", {"teachers": {"epochs": 4}})

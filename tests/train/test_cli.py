from __future__ import annotations

import json
from pathlib import Path

import pytest

from lymphosort.cli import main
from lymphosort.train.config import DistillConfig, TrainConfig, load_config, save_config
from lymphosort.errors import ConfigError


def test_train_resume_and_distill_through_the_cli(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    teacher = tmp_path / "teacher"
    common = ["--data-root", str(tiny_root), "--batch-size", "8", "--quiet", "--patience", "0"]
    assert main(["train", "--model", "tiny-64", "--out", str(teacher), "--epochs", "1", *common]) == 0
    out = capsys.readouterr().out
    assert "run folder" in out and "test:" in out
    cfg = load_config(teacher / "config.yaml")
    assert cfg.model == "tiny-64" and cfg.data_root == str(tiny_root) and cfg.epochs == 1
    assert json.loads((teacher / "metrics.json").read_text())["n"] > 0
    # --resume reads RUN/config.yaml; only --epochs changes.
    assert main(["train", "--out", str(teacher), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert [h["epoch"] for h in json.loads((teacher / "history.json").read_text())] == [1, 2]
    assert load_config(teacher / "config.yaml").model == "tiny-64"

    student = tmp_path / "student"
    args = ["distill", "--teacher", str(teacher), "--student", "tiny-32", "--method", "kd",
            "--method-arg", "temperature=3", "--out", str(student), "--epochs", "1", "--batch-size", "8", "--quiet"]
    assert main(args) == 0
    cfg = load_config(student / "config.yaml")
    assert cfg.data_root == str(tiny_root)  # taken from the teacher's card
    # --method-arg overrides one of the best setting's kd weights and keeps the other; the
    # saved config is resolved (the loss's own default mixup_alpha included).
    alpha = DistillConfig().method_kwargs["alpha"]
    assert cfg.method == "kd" and cfg.method_kwargs == {"temperature": 3.0, "alpha": alpha, "mixup_alpha": 0.0}
    assert cfg.teacher == str(teacher) and cfg.task == "t4-vs-b"
    # Without --student/--method/--epochs: the documented best setting, length included.
    from lymphosort.cli import build_parser
    from lymphosort.train.cli import distill_config

    bare = build_parser().parse_args(["distill", "--teacher", str(teacher), "--out", str(tmp_path / "d")])
    cfg = distill_config(bare)
    assert (cfg.model, cfg.method, cfg.epochs, cfg.patience) == ("tiny-32-whole", "kd", 60, 0)
    assert cfg.method_kwargs == {"temperature": 2.0, "alpha": 0.5}
    # the Python call resolves the same config as the command
    assert cfg == DistillConfig.for_teacher(teacher)
    # another loss starts from its own defaults, not kd's
    assert distill_config(build_parser().parse_args(
        ["distill", "--teacher", str(teacher), "--out", str(tmp_path / "d"), "--method", "dkd"])).method_kwargs == {}
    assert cfg.data_root == str(tiny_root)
    assert distill_config(build_parser().parse_args(
        ["distill", "--teacher", str(teacher), "--out", str(tmp_path / "d"), "--epochs", "5"])).epochs == 5
    assert distill_config(build_parser().parse_args(
        ["distill", "--teacher", str(teacher), "--out", str(tmp_path / "d"), "--patience", "8"])).patience == 8
    assert cfg.teacher_precision == "32" and distill_config(build_parser().parse_args(
        ["distill", "--teacher", str(teacher), "--out", str(tmp_path / "d"), "--teacher-precision", "bf16"]
    )).teacher_precision == "bf16"


def test_default_model_and_missing_data_root_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere"
    assert main(["train", "--out", str(tmp_path / "r"), "--data-root", str(missing), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"lymphosort data synth --root {missing}" in err and err.count("\n") == 1
    from lymphosort.cli import build_parser
    from lymphosort.train.cli import distill_config, train_config

    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r")])
    assert train_config(args) == TrainConfig() and TrainConfig().model == "compact-teacher"
    args = build_parser().parse_args(["distill", "--out", str(tmp_path / "r")])
    with pytest.raises(ConfigError, match="teacher"):
        distill_config(args)
    # a teacher on a TrainConfig would silently train something else than `distill`: refused
    with pytest.raises(ConfigError, match="DistillConfig"):
        TrainConfig(teacher=str(tmp_path)).validate()


def test_config_round_trip_and_safety(tmp_path: Path) -> None:
    cfg = TrainConfig(model="tiny-48", epochs=3, augment={"flip_p": 0.3}, method_kwargs={"temperature": 2.0})
    for name in ("c.yaml", "c.json"):
        assert load_config(save_config(cfg, tmp_path / name)) == cfg
    (tmp_path / "bad.yaml").write_text("model: tiny-48\nlearning_rate: 3\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(tmp_path / "bad.yaml")
    # A YAML tag that would construct a Python object is refused by safe_load.
    (tmp_path / "evil.yaml").write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(Exception):
        load_config(tmp_path / "evil.yaml")
    with pytest.raises(ConfigError, match="task"):
        TrainConfig(task="t5-vs-b").validate()

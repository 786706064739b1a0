"""One config object per command: the Python call and the command line resolve the same
config, a YAML file is data only, and flags override it."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from lymphosort.cli import build_parser
from lymphosort.config import (add_config_flags, command_flags, field_docs, load_config, resolve_config,
                               save_config)
from lymphosort.errors import ConfigError


@dataclass
class _Inner:
    #: how many
    n: int = 3


@dataclass
class _Toy:
    name: str = "a"  # a trailing comment documents too
    #: a float that may be unset
    x: float | None = 1.5
    flag: bool = False
    items: list[str] = field(default_factory=lambda: ["p", "q"])
    kwargs: dict[str, Any] = field(default_factory=lambda: {"t": 2.0, "u": 1})
    inner: _Inner = field(default_factory=_Inner)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_config_flags(p, _Toy, aliases={"inner.n": ["--n"]})
    return p.parse_args(argv)


def test_generated_flags_types_merge_and_precedence(tmp_path: Path) -> None:
    assert field_docs(_Toy) == {"name": "a trailing comment documents too", "x": "a float that may be unset"}
    assert resolve_config(_Toy, _parse([])) == _Toy()
    cfg = resolve_config(_Toy, _parse(["--name", "b", "--x", "none", "--flag", "--items", "r,s,t",
                                       "--kwargs", "t=3", "--n", "7"]))
    # a KEY=VALUE flag updates the mapping below it; `none` unsets an optional field
    assert cfg == _Toy(name="b", x=None, flag=True, items=["r", "s", "t"], kwargs={"t": 3, "u": 1}, inner=_Inner(7))
    # class defaults < caller defaults < file < flags
    f = tmp_path / "c.yaml"
    f.write_text("name: file\ninner: {n: 5}\nx: 2.5\n")
    cfg = resolve_config(_Toy, _parse(["--config", str(f), "--x", "9"]), defaults={"name": "caller", "flag": True})
    assert (cfg.name, cfg.x, cfg.flag, cfg.inner.n) == ("file", 9.0, True, 5)
    with pytest.raises(SystemExit):
        _parse(["--n", "seven"])  # a wrong type is argparse's clear error


def test_config_files_are_data_only_and_checked(tmp_path: Path) -> None:
    cfg = _Toy(name="z", items=["a"], inner=_Inner(9))
    for name in ("c.yaml", "c.json"):
        assert load_config(_Toy, save_config(cfg, tmp_path / name)) == cfg
    bad = {"name: a\nnmae: b\n": "nmae",  # a misspelt key is named
           "inner: {m: 1}\n": "inner.m",  # also inside a nested config
           "name: !!python/object/apply:os.system ['echo hi']\n": "not valid YAML",  # never executed
           "- 1\n- 2\n": "mapping"}
    for i, (text, message) in enumerate(bad.items()):
        (tmp_path / f"bad{i}.yaml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(_Toy, tmp_path / f"bad{i}.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(_Toy, tmp_path / "missing.yaml")


def _teacher(tmp_path: Path, data_root: str) -> Path:
    import torch

    from lymphosort.models import create_model
    from lymphosort.models.checkpoint import ModelCard, save_checkpoint

    torch.manual_seed(0)
    m = create_model("tiny-32").eval()
    return save_checkpoint(tmp_path / "teacher", m, ModelCard.from_model(
        m, task="t8-vs-b", classes=["B", "T8"], config={"data_root": data_root}))


def _cli_config(argv: list[str]) -> Any:
    """The config object the command line `argv` runs with."""
    from lymphosort.realtime.session import RealtimeConfig
    from lymphosort.train.cli import distill_config, train_config
    from lymphosort.transfer.cli import _base_cfg

    args = build_parser().parse_args(argv)
    if argv[0] == "train":
        return train_config(args)
    if argv[0] == "distill":
        return distill_config(args)
    if argv[0] == "realtime":
        return resolve_config(RealtimeConfig, args)
    if argv[0] == "transfer":
        return _base_cfg(args)
    from lymphosort.export import config as ec

    cls = {"onnx": ec.OnnxExportConfig, "hls": ec.HlsExportConfig, "rtl": ec.RtlExportConfig}[argv[1]]
    return resolve_config(cls, args)


def test_each_command_resolves_the_python_config(tmp_path: Path) -> None:
    """For every command, a non-default config made in Python, written as the flags
    `command_flags` prints next to results, parses back to the same object."""
    from lymphosort.export.config import HlsExportConfig, OnnxExportConfig, RtlExportConfig
    from lymphosort.realtime.session import RealtimeConfig
    from lymphosort.train.config import DistillConfig, TrainConfig
    from lymphosort.transfer.finetune import FinetuneConfig

    teacher = _teacher(tmp_path, "data/elsewhere")
    cases = [
        (["train", "--out", "R"], TrainConfig(model="tiny-48", epochs=3, lr=3e-4, augment=None, balanced=False,
                                              ema_decay=0.99, max_train_samples=500, devices=2)),
        (["distill", "--out", "R"], DistillConfig.for_teacher(teacher, method="dkd", seed=4,
                                                              student_layers=["features.2"], teacher_precision="bf16")),
        (["distill", "--out", "R"], DistillConfig.for_teacher(teacher, method_kwargs={"temperature": 4.0, "alpha": 0.5})),
        (["distill", "--out", "R"], DistillConfig.for_teacher(teacher, model="tiny-32-whole-q4", model_kwargs={
            "bits": [8, 4, 4, 4], "act_bits": [8, 6, 4], "weight_scale": "mse"})),
        (["export", "onnx", "RUN", "--out", "O"], OnnxExportConfig(data_root="d", n_check=10, opset=18)),
        (["export", "hls", "RUN", "--out", "O"], HlsExportConfig(clock_ns=4.0, hls_config="h.yaml", synth=True)),
        (["export", "rtl", "RUN", "--out", "O"], RtlExportConfig(pnr=True, device="45k", pnr_timeout_s=60.0)),
        (["realtime"], RealtimeConfig(model="M", backend="torch", paced=False, threshold=0.7,
                                      sim=replace(RealtimeConfig().sim, preset="hard", cell_rate=0.5))),
        (["transfer", "finetune", "RUN", "--out", "O"], FinetuneConfig(lr=1e-3, epochs=5, max_val_samples=None,
                                                                        augment={"flip_p": 0.2}, reset_head=True)),
    ]
    for head, cfg in cases:  # as a shell reads the printed line
        assert _cli_config([*head, *shlex.split(" ".join(command_flags(cfg)))]) == cfg, head
    # the distillation's task and data root come from the teacher, as on the command line
    bare = _cli_config(["distill", "--out", "R", "--teacher", str(teacher)])
    assert bare == DistillConfig.for_teacher(teacher) and (bare.task, bare.data_root) == ("t8-vs-b", "data/elsewhere")
    assert (bare.model, bare.method, bare.method_kwargs, bare.epochs) == ("tiny-32-whole", "kd", {"temperature": 2.0,
                                                                                            "alpha": 0.5}, 60)
    # the old spellings still work
    old = _cli_config(["realtime", "--model", "M", "--as-fast-as-possible", "--preset", "hard", "--flow-px", "64"])
    assert (old.paced, old.sim.preset, old.sim.flow_px_per_frame) == (False, "hard", 64.0)


def test_zero_shot_flags_and_bad_task() -> None:
    from lymphosort.transfer.zeroshot import ZeroShotConfig

    args = build_parser().parse_args(["transfer", "zero-shot", "RUN", "--task", "t-vs-b", "--no-latency", "--n-boot", "9"])
    assert resolve_config(ZeroShotConfig, args) == ZeroShotConfig(task="t-vs-b", latency=False, n_boot=9)
    with pytest.raises(ConfigError, match="t8-vs-b"):
        resolve_config(ZeroShotConfig, build_parser().parse_args(["transfer", "zero-shot", "RUN", "--task", "t9"]))


def test_plain_flag_commands_take_a_config_file_too(tmp_path: Path) -> None:
    """`data synth` (and evaluate, audit, data compare, ...) read --config FILE as their defaults."""
    from lymphosort.cli import main
    from lymphosort.data.lymphomnist import read_provenance

    cfg = tmp_path / "synth.yaml"
    cfg.write_text(f"root: {tmp_path / 'sim'}\nn-train: 30\nn_test: 20\nseed: 3\n")
    assert main(["data", "synth", "--config", str(cfg), "--seed", "4"]) == 0  # the flag wins over the file
    prov = read_provenance(tmp_path / "sim")
    assert (prov["n_train"], prov["n_test"], prov["seed"]) == (30, 20, 4)
    (tmp_path / "bad.yaml").write_text("n_trian: 3\n")
    assert main(["data", "synth", "--config", str(tmp_path / "bad.yaml")]) == 2

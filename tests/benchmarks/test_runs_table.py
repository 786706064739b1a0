"""runs_table: every row names the command that made it, also for transfer folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import runs_table  # noqa: E402


def test_transfer_folders_name_their_command(tmp_path: Path) -> None:
    zs = tmp_path / "zs"
    zs.mkdir()
    (zs / "metrics.json").write_text(json.dumps({"task": "t8-vs-b", "zero_shot": {
        "source_run": "runs/r18", "config": {"task": "t8-vs-b", "data_root": "data/sim-v3.1", "latency": False}}}))
    assert runs_table.run_command(zs) == ("lymphosort transfer zero-shot runs/r18 --task t8-vs-b "
                                          "--data-root data/sim-v3.1 --no-latency")
    ft = tmp_path / "ft"
    ft.mkdir()
    (ft / "transfer.json").write_text(json.dumps({"source_run": "runs/r18", "task": "t8-vs-b", "mode": "full",
                                                  "shots": "all", "data_root": "data/sim-v3.1"}))
    assert runs_table.run_command(ft) == (f"lymphosort transfer finetune runs/r18 --task t8-vs-b --mode full "
                                          f"--shots all --data-root data/sim-v3.1 --out {ft}")
    (ft / "transfer.json").write_text(json.dumps({"source_run": "runs/r18", "task": "t8-vs-b", "mode": "full",
                                                  "shots": 5}))  # an older record: the card names the root
    (ft / "model.json").write_text(json.dumps({"format": 1, "model": "resnet18", "data": {"root": "data/card"}}))
    assert runs_table.run_command(ft).endswith(f"--shots 5 --data-root data/card --out {ft}")
    (ft / "transfer.json").write_text(json.dumps({"source_run": "runs/r18", "task": "t8-vs-b", "mode": "full",
                                                  "shots": "all", "data_root": "d",
                                                  "config": {"epochs": 8, "lr": 3e-4}}))
    assert runs_table.run_command(ft) == (f"lymphosort transfer finetune runs/r18 --task t8-vs-b --mode full "
                                          f"--shots all --epochs 8 --data-root d --out {ft}")
    (ft / "transfer.json").write_text(json.dumps({"source_run": "runs/r18", "task": "t8-vs-b", "mode": "full",
                                                  "shots": "all", "data_root": "d",
                                                  "config": {"epochs": None, "lr": 1e-3}}))
    assert runs_table.run_command(ft) == (f"lymphosort transfer finetune runs/r18 --task t8-vs-b --mode full "
                                          f"--shots all --lr 0.001 --data-root d --out {ft}")
    assert runs_table.run_command(tmp_path / "nothing") is None


def test_a_train_run_names_only_the_augmentation_it_changed(tmp_path: Path) -> None:
    from lymphosort.data.transforms import AugmentConfig
    from lymphosort.train.config import TrainConfig, save_config

    run = tmp_path / "run"
    run.mkdir()
    # a run records its augmentation whole (defaults resolved); the command shows what differs
    save_config(TrainConfig(epochs=2, augment=AugmentConfig().to_dict()), run / "config.yaml")
    assert runs_table.run_command(run) == f"lymphosort train --out {run} --epochs 2"
    save_config(TrainConfig(epochs=2, augment=AugmentConfig(flip_p=0.5, rot90=True).to_dict()), run / "config.yaml")
    assert runs_table.run_command(run) == f"lymphosort train --out {run} --epochs 2 --augment flip_p=0.5 --augment rot90=true"

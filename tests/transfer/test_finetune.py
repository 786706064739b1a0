"""Fine-tuning: shots, disjoint validation, modes, run folder layout, lab folders."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lymphosort.data.folder import FolderDataError
from lymphosort.errors import ConfigError
from lymphosort.models.checkpoint import load_checkpoint
from lymphosort.transfer.finetune import FinetuneConfig, finetune
from lymphosort.transfer.heads import last_stage, prepare_model
from lymphosort.transfer.shots import draw_shots, folder_data, lymphomnist_data, parse_shots

from .conftest import disc_images


def test_draw_shots_balanced_nested_deterministic() -> None:
    labels = np.array([0] * 30 + [1] * 12)
    five = draw_shots(labels, 5, seed=3, num_classes=2)
    ten = draw_shots(labels, 10, seed=3, num_classes=2)
    assert np.bincount(labels[five]).tolist() == [5, 5]
    assert set(five) <= set(ten)
    assert np.array_equal(five, draw_shots(labels, 5, seed=3, num_classes=2))
    assert not np.array_equal(five, draw_shots(labels, 5, seed=4, num_classes=2))
    assert len(draw_shots(labels, None, 0, 2)) == len(labels)
    with pytest.raises(ConfigError, match="only 12"):
        draw_shots(labels, 13, seed=0, num_classes=2)
    assert parse_shots("all") is None and parse_shots("25") == 25


def test_linear_run_folder_and_shots_never_meet_validation(t4_run: Path, disc_root: Path, tmp_path: Path) -> None:
    data = lymphomnist_data(disc_root, "t8-vs-b")
    out = tmp_path / "ft"
    t = finetune(t4_run, data, FinetuneConfig(mode="linear", shots=5, seed=1, n_boot=50, head_steps=100), out)
    # Shots are rows of the train file, validation rows of the test file's val part: by
    # construction disjoint; check by indices that they are exactly what they claim.
    train_rows = set(data.pool.indices.tolist())
    val_rows, test_rows = set(data.val.indices.tolist()), set(data.test.indices.tolist())
    assert len(t["shot_rows"]) == 10 and set(t["shot_rows"]) <= train_rows
    assert set(t["val_rows"]) <= val_rows and not set(t["val_rows"]) & test_rows
    assert t["shot_rows_of"] == "train file rows"

    model, card = load_checkpoint(out)
    assert card.task == "t8-vs-b" and card.classes == ["B", "T"]
    tr = card.data["transfer"]
    assert (tr["mode"], tr["shots"], tr["seed"], tr["source_task"]) == ("linear", "5", 1, "t4-vs-b")
    assert card.split_id == data.pool.split_id
    assert json.loads((out / "metrics.json").read_text())["accuracy"] >= 0.9
    # Only the head moved.
    src, _ = load_checkpoint(t4_run)
    assert torch.equal(src.features.conv1.weight, model.features.conv1.weight)


def test_folder_split_is_disjoint_and_partial_trains_last_stage_only(t4_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "lab"
    for name, lab in (("B", 0), ("NK", 1)):
        (folder / name).mkdir(parents=True)
        for i, im in enumerate(disc_images(np.full(20, lab), seed=lab)):
            Image.fromarray(im).save(folder / name / f"{i}.png")
    data = folder_data(folder)
    pos = {k: set(getattr(data, k).indices.tolist()) for k in ("pool", "val", "test")}
    assert not (pos["pool"] & pos["val"]) and not (pos["pool"] & pos["test"]) and not (pos["val"] & pos["test"])
    assert sum(map(len, pos.values())) == 40
    assert folder_data(folder).val.indices.tolist() == data.val.indices.tolist()  # deterministic

    out = tmp_path / "nk"
    cfg = FinetuneConfig(mode="partial", shots=5, seed=0, epochs=2, min_epoch_samples=32, batch_size=16, n_boot=20)
    t = finetune(t4_run, data, cfg, out)
    assert set(t["shot_rows"]) <= pos["pool"] and not set(t["shot_rows"]) & (pos["val"] | pos["test"])
    assert t["head"]["kept"] is False and t["head"]["copied"] == ["B<-B"]
    model, card = load_checkpoint(out)
    src, _ = load_checkpoint(t4_run)
    assert card.classes == ["B", "NK"] and card.task == "folder"
    stage = last_stage(model)
    assert stage == "features.conv3"
    assert torch.equal(src.features.conv1.weight, model.features.conv1.weight)
    assert not torch.equal(src.features.conv3.weight, model.features.conv3.weight)


def test_three_class_head_and_tiny_folder_message(t4_run: Path, tmp_path: Path) -> None:
    model, _, info = prepare_model(t4_run, ("B", "T4", "T8"), "full")
    assert model.spec.num_classes == 3 and info["copied"] == ["B<-B", "T4<-T", "T8<-T"]
    assert all(p.requires_grad for p in model.parameters())
    from PIL import Image

    (tmp_path / "few" / "B").mkdir(parents=True)
    (tmp_path / "few" / "NK").mkdir()
    for i in range(5):
        Image.fromarray(np.full((64, 64), 100, np.uint8)).save(tmp_path / "few" / "B" / f"{i}.png")
    Image.fromarray(np.full((64, 64), 200, np.uint8)).save(tmp_path / "few" / "NK" / "0.png")
    with pytest.raises(FolderDataError, match="at least 3"):
        folder_data(tmp_path / "few")


def test_partial_finetune_killed_after_a_non_best_epoch_resumes_bit_identically(
    t4_run: Path, disc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    import lymphosort.train.fit as fit_module
    from tests.train.test_resume import FirstEpoch, KillDuringEpoch, Killed, assert_same_final_state

    data = lymphomnist_data(disc_root, "t8-vs-b")
    cfg = FinetuneConfig(mode="partial", shots=5, seed=0, epochs=5, patience=0, lr=3e-3, min_epoch_samples=64,
                         batch_size=16, n_boot=20)
    full = finetune(t4_run, data, cfg, tmp_path / "full")
    hist = json.loads((tmp_path / "full" / "history.json").read_text())
    best = max(hist, key=lambda h: h["val_bacc"])["epoch"]  # the first of equal scores, as the checkpoint keeps it
    assert best < 3, f"best epoch {best} must come before the kill"

    out = tmp_path / "killed"
    real_fit = fit_module.fit
    monkeypatch.setattr(fit_module, "fit", functools.partial(real_fit, callbacks=[KillDuringEpoch(4)]))
    with pytest.raises(Killed):
        finetune(t4_run, data, cfg, out)
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2, 3]
    with pytest.raises(ConfigError, match="--resume"):
        finetune(t4_run, data, cfg, out)
    with pytest.raises(ConfigError, match="shots"):
        finetune(t4_run, data, dataclasses.replace(cfg, shots=6), out, resume=True)

    first = FirstEpoch()
    monkeypatch.setattr(fit_module, "fit", functools.partial(real_fit, callbacks=[first]))
    resumed = finetune(t4_run, data, cfg, out, resume=True)
    assert first.first == 4
    assert_same_final_state(tmp_path / "full", out)
    assert resumed["test"] == full["test"]
    # A finished folder is read back, not trained again.
    first.first = None
    assert finetune(t4_run, data, cfg, out, resume=True) == json.loads((out / "transfer.json").read_text())
    assert first.first is None


def test_linear_finetune_resumes_to_the_same_head(t4_run: Path, disc_root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data = lymphomnist_data(disc_root, "t8-vs-b")
    cfg = FinetuneConfig(mode="linear", shots=5, seed=1, n_boot=20, head_steps=60, reset_head=True)
    finetune(t4_run, data, cfg, tmp_path / "full")

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        m.setattr("lymphosort.models.checkpoint.save_checkpoint", killed)
        with pytest.raises(KeyboardInterrupt):
            finetune(t4_run, data, cfg, out)
    assert not (out / "transfer.json").exists()
    finetune(t4_run, data, cfg, out, resume=True)
    a, _ = load_checkpoint(tmp_path / "full")
    b, _ = load_checkpoint(out)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

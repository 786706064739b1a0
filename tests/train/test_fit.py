from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lymphosort.errors import ConfigError
from lymphosort.train.callbacks import warmup_cosine
from lymphosort.train.config import TrainConfig
from lymphosort.train.datamodule import BalancedSampler, TensorBatches
from lymphosort.train.fit import fit
from tests.train.helpers import toy_split


def _cfg(**kw) -> TrainConfig:
    base = dict(model="tiny-32", epochs=3, batch_size=32, lr=5e-3, patience=0, seed=0, warmup_frac=0.1)
    base.update(kw)
    return TrainConfig(**base)


def test_learns_a_separable_toy_set_and_writes_the_run_folder(tmp_path: Path) -> None:
    from lymphosort.models.checkpoint import load_checkpoint

    train, val, test = toy_split(192, 0), toy_split(64, 1, "val"), toy_split(64, 2, "test")
    res = fit(_cfg(), tmp_path / "run", quiet=True, train=train, val=val, test=test)
    assert res.best_val["val_bacc"] >= 0.9
    assert res.test_metrics is not None and res.test_metrics["balanced_accuracy"] >= 0.9
    run = res.run_dir
    for name in ("model.safetensors", "model.json", "last.ckpt", "config.yaml", "history.json", "metrics.csv",
                 "metrics.json", "curves.png", "train.log"):
        assert (run / name).is_file(), name
    hist = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert all(h["train_loss"] is not None and h["val_loss"] is not None for h in hist)
    model, card = load_checkpoint(run)
    assert card.task == "t4-vs-b" and card.classes == ["B", "T"] and card.split_id == "toy-split"
    assert card.data["preset"] == "toy" and card.config["model"] == "tiny-32"
    # the augmentation is recorded whole (defaults resolved), so a later default cannot change it
    from lymphosort.data.transforms import AugmentConfig
    from lymphosort.train.config import load_config

    saved = load_config(run / "config.yaml").augment
    assert saved is not None and AugmentConfig(**saved) == AugmentConfig(**(_cfg().augment or {}))
    assert set(saved) == set(AugmentConfig().to_dict())
    assert "root" not in card.data  # the data was passed in, not read from cfg.data_root
    assert card.metrics["val"]["val_bacc"] == res.best_val["val_bacc"]
    # The saved weights are the best epoch's and reproduce its validation accuracy.
    from lymphosort.data.transforms import to_model_input

    s = model.spec
    pred = model(to_model_input(val.images, s.input_size, s.mean, s.std)).argmax(1)
    assert (pred == val.labels).float().mean().item() == pytest.approx(res.best_val["val_acc"], abs=1e-6)


def test_resume_continues_history_and_refuses_to_overwrite(tmp_path: Path) -> None:
    train, val = toy_split(96, 0), toy_split(32, 1, "val")
    out = tmp_path / "run"
    r1 = fit(_cfg(epochs=1), out, quiet=True, train=train, val=val, evaluate=False)
    assert [h["epoch"] for h in r1.history] == [1]
    with pytest.raises(ConfigError, match="--resume"):
        fit(_cfg(epochs=1), out, quiet=True, train=train, val=val, evaluate=False)
    r2 = fit(_cfg(epochs=2), out, resume=True, quiet=True, train=train, val=val, evaluate=False)
    assert [h["epoch"] for h in r2.history] == [1, 2]
    assert r2.history[0] == r1.history[0]  # epoch 1 kept, not retrained
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2]
    with pytest.raises(ConfigError, match="nothing to resume"):
        fit(_cfg(), tmp_path / "other", resume=True, quiet=True, train=train, val=val)


def test_seeded_runs_are_reproducible(tmp_path: Path) -> None:
    train, val = toy_split(64, 0), toy_split(32, 1, "val")
    a = fit(_cfg(epochs=1), tmp_path / "a", quiet=True, train=train, val=val, evaluate=False)
    b = fit(_cfg(epochs=1), tmp_path / "b", quiet=True, train=train, val=val, evaluate=False)
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=1e-5)


def test_balanced_sampler_equalises_classes_and_is_deterministic_per_epoch() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    s = BalancedSampler(labels, num_samples=4000, seed=3)
    s.set_epoch(0)
    first = list(s)
    frac1 = (labels[first] == 1).float().mean().item()
    assert 0.45 < frac1 < 0.55
    s.set_epoch(0)
    assert list(s) == first
    s.set_epoch(1)
    assert list(s) != first


def test_tensor_batches_fetch_whole_batches_and_independent_teacher_images() -> None:
    images = torch.arange(10, dtype=torch.uint8)[:, None, None].expand(10, 64, 64).contiguous()
    labels = torch.arange(10) % 2
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    ds = TensorBatches(images, labels, perm)
    x, y, tx = ds.__getitems__([0, 3, 5])
    assert x.shape == (3, 64, 64) and y.tolist() == [0, 1, 1]
    assert tx[:, 0, 0].tolist() == perm[[0, 3, 5]].tolist()


def test_warmup_cosine_schedule_shape() -> None:
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    assert all(f(i) >= f(i + 1) for i in range(10, 110))


def test_resumed_run_rewrites_its_test_metrics(tiny_root: Path, tmp_path: Path) -> None:
    """metrics.json is the last evaluation's, not the first run's (evaluate_run path)."""
    out = tmp_path / "run"
    cfg = _cfg(epochs=1, data_root=str(tiny_root), augment=None)
    fit(cfg, out, quiet=True)
    (out / "metrics.json").write_text('{"stale": true}')
    r2 = fit(cfg.replace(epochs=2), out, resume=True, quiet=True)
    stored = json.loads((out / "metrics.json").read_text())
    card = json.loads((out / "model.json").read_text())
    assert "stale" not in stored
    assert stored["accuracy"] == r2.test_metrics["accuracy"] == card["metrics"]["test"]["accuracy"]
    assert stored["n"] == card["metrics"]["test"]["n"] > 0
    assert card["data"]["root"] == str(tiny_root)  # what `evaluate RUN` uses without --data-root


def test_fit_restores_logger_levels(tmp_path: Path) -> None:
    import logging

    names = ("lymphosort", "lightning.pytorch")
    before = {n: logging.getLogger(n).level for n in names}
    fit(_cfg(epochs=1), tmp_path / "run", quiet=True, train=toy_split(64, 0), val=toy_split(32, 1, "val"), evaluate=False)
    assert {n: logging.getLogger(n).level for n in names} == before


def test_init_from_starts_from_the_run_weights_and_a_qat_twin_from_its_float_student(tmp_path: Path) -> None:
    from lymphosort.models.checkpoint import load_checkpoint

    train, val = toy_split(128, 0), toy_split(32, 1, "val")
    src = fit(_cfg(epochs=2), tmp_path / "float", quiet=True, train=train, val=val, evaluate=False)
    assert src.best_val["val_bacc"] >= 0.9
    float_model, _ = load_checkpoint(src.run_dir)
    x = float_model.spec.prepare(val.images)
    with torch.no_grad():
        float_pred = float_model(x).argmax(1)

    # Same model, zero learning rate steps: the run ends with exactly the source weights.
    same = fit(_cfg(epochs=1, lr=1e-12, init_from=str(src.run_dir)), tmp_path / "same", quiet=True, train=train,
               val=val, evaluate=False)
    model, card = load_checkpoint(same.run_dir)
    for (k, a), b in zip(float_model.state_dict().items(), model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    assert card.config["init_from"] == str(src.run_dir)

    # The 8-bit twin starts from the float weights: before any real training it already
    # makes (nearly) the float model's decisions, which a fresh QAT model would not.
    q = fit(_cfg(model="tiny-32-q8", epochs=1, lr=1e-12, init_from=str(src.run_dir)), tmp_path / "q8", quiet=True,
            train=train, val=val, evaluate=False)
    qmodel, _ = load_checkpoint(q.run_dir)
    with torch.no_grad():
        agree = (qmodel(x).argmax(1) == float_pred).float().mean().item()
    assert agree >= 0.9

    with pytest.raises(ConfigError, match="QAT twin"):
        fit(_cfg(model="tiny-48", init_from=str(src.run_dir)), tmp_path / "bad", quiet=True, train=train, val=val)


def test_ema_weights_are_validated_saved_and_resumed(tmp_path: Path) -> None:
    from lymphosort.data.transforms import to_model_input
    from lymphosort.models.checkpoint import load_checkpoint

    train, val = toy_split(96, 0), toy_split(48, 1, "val")
    plain = fit(_cfg(epochs=2), tmp_path / "plain", quiet=True, train=train, val=val, evaluate=False)
    out = tmp_path / "ema"
    r1 = fit(_cfg(epochs=1, ema_decay=0.9), out, quiet=True, train=train, val=val, evaluate=False)
    ckpt = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    # Lightning keeps the raw weights beside the average, so a resume continues both.
    assert "current_model_state" in ckpt
    avg, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(avg[k], raw[k]) for k in avg if k.startswith("student."))
    r2 = fit(_cfg(epochs=2, ema_decay=0.9), out, resume=True, quiet=True, train=train, val=val, evaluate=False)
    assert [h["epoch"] for h in r2.history] == [1, 2] and r2.history[0] == r1.history[0]
    model, card = load_checkpoint(out)
    assert card.config["ema_decay"] == 0.9
    # The saved model is the averaged one that validation scored, not the last raw step.
    s = model.spec
    pred = model(to_model_input(val.images, s.input_size, s.mean, s.std)).argmax(1)
    assert (pred == val.labels).float().mean().item() == pytest.approx(r2.best_val["val_acc"], abs=1e-6)
    p_model, _ = load_checkpoint(plain.run_dir)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), p_model.state_dict().values()))


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_ema_decay_outside_the_open_unit_interval_is_refused(decay: float) -> None:
    with pytest.raises(ConfigError, match="ema_decay"):
        _cfg(ema_decay=decay).validate()


def test_frozen_teacher_graph_gives_the_eager_logits_at_any_batch_size() -> None:
    from lymphosort.models import create_model
    from lymphosort.train.module import freeze_for_inference

    torch.manual_seed(0)
    teacher = create_model("compact-teacher", num_classes=2).eval()
    graph = freeze_for_inference(teacher, torch.rand(8, 1, 64, 64))
    assert graph is not teacher
    for n in (8, 3, 1):  # the last batch of an epoch is usually smaller
        x = torch.rand(n, 1, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(graph(x), teacher(x), rtol=1e-4, atol=1e-4)


def test_an_untraceable_teacher_falls_back_to_eager_mode() -> None:
    from lymphosort.train.module import freeze_for_inference

    class DataDependent(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, : int(x.sum() > 0) + 1]  # shape depends on the values

    model = DataDependent()
    out = freeze_for_inference(model, torch.rand(2, 1, 4, 4))
    assert out is model

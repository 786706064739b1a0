from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lymphosort.data.transforms import to_model_input
from lymphosort.train.config import DistillConfig, TrainConfig
from lymphosort.train.fit import fit
from lymphosort.train.module import LymphoModule
from tests.train.helpers import toy_split


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = TrainConfig(model="tiny-64", epochs=2, batch_size=32, lr=5e-3, patience=0)
    fit(cfg, out, quiet=True, train=toy_split(128, 0), val=toy_split(32, 1, "val"), evaluate=False)
    return out


@pytest.mark.parametrize("method", ["kd", "dkd", "at", "paper", "none"])
def test_each_method_distils_end_to_end(teacher_run: Path, tmp_path: Path, method: str) -> None:
    from lymphosort.models.checkpoint import load_checkpoint

    before = {k: v.clone() for k, v in load_checkpoint(teacher_run)[0].state_dict().items()}
    cfg = DistillConfig(model="tiny-32", teacher=str(teacher_run), method=method, epochs=1, batch_size=32, patience=0)
    res = fit(cfg, tmp_path / method, quiet=True, train=toy_split(96, 2), val=toy_split(32, 3, "val"), evaluate=False)
    assert len(res.history) == 1 and res.history[0]["train_loss"] is not None
    model, card = load_checkpoint(tmp_path / method)
    assert card.model == "tiny-32" and card.config["method"] == method and card.config["teacher"] == str(teacher_run)
    if method == "at":
        assert card.config["student_layers"] and card.config["teacher_layers"]
    if method == "paper":
        assert card.config["method_kwargs"] == {"mixup_alpha": 1.0}  # the reference scripts' Beta(1, 1)
    # The teacher's run folder is untouched and its weights never trained.
    after = load_checkpoint(teacher_run)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not (tmp_path / method / "model.safetensors").samefile(teacher_run / "model.safetensors")


def test_a_field_of_view_student_distils_from_logits_but_not_from_feature_maps(teacher_run: Path, tmp_path: Path) -> None:
    from lymphosort.errors import ConfigError

    train, val = toy_split(96, 2), toy_split(32, 3, "val")
    kd = DistillConfig(model="tiny-32-centre", teacher=str(teacher_run), method="kd", epochs=1, batch_size=32, patience=0)
    assert fit(kd, tmp_path / "kd", quiet=True, train=train, val=val, evaluate=False).history
    at = DistillConfig(model="tiny-32-centre", teacher=str(teacher_run), method="at", epochs=1, batch_size=32, patience=0)
    with pytest.raises(ConfigError, match="field of view"):
        fit(at, tmp_path / "at", quiet=True, train=train, val=val, evaluate=False)


# mixup_alpha 1: function matching, the teacher must see the very same mixed images.
@pytest.mark.parametrize("mixup_alpha", [0.0, 1.0])
def test_teacher_and_student_see_the_same_augmented_pixels(teacher_run: Path, mixup_alpha: float) -> None:
    from lymphosort.distill.losses import KDLoss
    from lymphosort.models.registry import create_model
    from lymphosort.models.checkpoint import load_checkpoint

    teacher = load_checkpoint(teacher_run)[0]
    student = create_model("tiny-32")
    module = LymphoModule(student, KDLoss(mixup_alpha=mixup_alpha), num_classes=2, augment={}, teacher=teacher)
    seen: dict[str, torch.Tensor] = {}
    student.register_forward_pre_hook(lambda m, a: seen.__setitem__("s", a[0].detach()))
    teacher.register_forward_pre_hook(lambda m, a: seen.__setitem__("t", a[0].detach()))
    module.on_train_epoch_start()
    module.log = lambda *a, **k: None  # no Trainer attached
    data = toy_split(8, 5)
    loss = module.training_step((data.images, data.labels), 0)
    loss.backward()
    s, t = student.spec, teacher.spec
    assert seen["s"].shape[-1] == 32 and seen["t"].shape[-1] == 64
    # Undo the teacher's normalisation, resize to the student's input: identical pixels.
    t_pixels = seen["t"] * t.std + t.mean
    assert torch.allclose(to_model_input(t_pixels, s.input_size, s.mean, s.std), seen["s"], atol=1e-4)
    # ... and they were augmented (not the raw images).
    raw = to_model_input(data.images, s.input_size, s.mean, s.std)
    assert not torch.allclose(raw, seen["s"], atol=1e-3)
    # Teacher frozen, in eval mode even after Lightning-style train() calls.
    module.train()
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())


def test_a_distillation_with_weight_averaging_resumes(teacher_run: Path, tmp_path: Path) -> None:
    from lymphosort.models.checkpoint import load_checkpoint

    cfg = DistillConfig(model="tiny-32", teacher=str(teacher_run), method="kd", epochs=1, batch_size=32, patience=0,
                      ema_decay=0.9)
    train, val = toy_split(96, 2), toy_split(32, 3, "val")
    fit(cfg, tmp_path / "run", quiet=True, train=train, val=val, evaluate=False)
    res = fit(cfg.replace(epochs=2), tmp_path / "run", resume=True, quiet=True, train=train, val=val, evaluate=False)
    assert [h["epoch"] for h in res.history] == [1, 2]
    # The teacher still comes from its own folder: the saved student holds no teacher weights.
    model, _ = load_checkpoint(tmp_path / "run")
    assert not any(k.startswith("teacher.") for k in model.state_dict())


def test_a_bfloat16_teacher_gives_float32_logits_close_to_the_exact_ones(teacher_run: Path) -> None:
    from lymphosort.distill.losses import KDLoss
    from lymphosort.models.registry import create_model
    from lymphosort.models.checkpoint import load_checkpoint

    teacher = load_checkpoint(teacher_run)[0]
    x = torch.rand(16, 1, 64, 64)
    exact = LymphoModule(create_model("tiny-32"), KDLoss(), num_classes=2, teacher=teacher)._teacher_forward(x)
    fast = LymphoModule(create_model("tiny-32"), KDLoss(), num_classes=2, teacher=teacher, teacher_precision="bf16")
    out = fast._teacher_forward(x)
    assert out.dtype == torch.float32 and out.shape == exact.shape
    # bfloat16 keeps 8 significant bits: close, but not the float32 result itself.
    torch.testing.assert_close(out, exact, rtol=0.05, atol=0.05)
    assert not torch.equal(out, exact)


def test_feature_distillation_runs_with_a_bfloat16_teacher(teacher_run: Path, tmp_path: Path) -> None:
    from lymphosort.models.checkpoint import load_checkpoint

    cfg = DistillConfig(model="tiny-32", teacher=str(teacher_run), method="at", epochs=1, batch_size=32, patience=0,
                      teacher_precision="bf16")
    res = fit(cfg, tmp_path / "at", quiet=True, train=toy_split(64, 2), val=toy_split(32, 3, "val"), evaluate=False)
    assert math.isfinite(res.history[0]["train_loss"])
    assert load_checkpoint(tmp_path / "at")[1].config["teacher_precision"] == "bf16"


def test_an_unknown_teacher_precision_is_refused() -> None:
    from lymphosort.errors import ConfigError

    with pytest.raises(ConfigError, match="teacher_precision"):
        TrainConfig(teacher_precision="fp8").validate()

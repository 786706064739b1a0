"""A run killed after epoch k resumes at k+1 and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lymphosort.train.config import DistillConfig, TrainConfig
from lymphosort.train.fit import LAST_CKPT, best_row, fit
from tests.train.helpers import toy_split


class Killed(RuntimeError):
    """Stands for SIGKILL: raised inside training, nothing after it runs."""


class KillDuringEpoch(L.Callback):
    """Dies on the second batch of epoch `epoch` (1-based): epochs before it are finished."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch + 1 == self.epoch and batch_idx == 1:
            raise Killed(f"killed in epoch {self.epoch}")


class FirstEpoch(L.Callback):
    """Records the 1-based number of the first epoch this process trains."""

    def __init__(self) -> None:
        self.first: int | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.first is None:
            self.first = trainer.current_epoch + 1


def _ckpt(run: Path) -> dict[str, Any]:
    return torch.load(run / LAST_CKPT, map_location="cpu", weights_only=True)


def assert_same_final_state(a: Path, b: Path) -> None:
    """Weights, optimiser and scheduler of both runs' last.ckpt, and their saved models, equal bit for bit."""
    from safetensors.torch import load_file

    ca, cb = _ckpt(a), _ckpt(b)
    assert ca["epoch"] == cb["epoch"] and ca["global_step"] == cb["global_step"]
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k, v in ca["state_dict"].items():
        assert torch.equal(v, cb["state_dict"][k]), k
    for sa, sb in zip(ca["optimizer_states"][0]["state"].values(), cb["optimizer_states"][0]["state"].values()):
        for k, v in sa.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[k])), k
    assert ca["lr_schedulers"] == cb["lr_schedulers"]
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


class GlobalRandomNoise(L.Callback):
    """Nudges the weights with the global torch generator after every step (as dropout or a
    model's own random draws would use it)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        with torch.no_grad():
            for p in pl_module.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p), alpha=1e-4)


def kill_and_resume(
    cfg: TrainConfig, tmp_path: Path, kill_epoch: int, extra: list[L.Callback] | None = None, **data: Any
) -> tuple[Path, Path, list]:
    """(uninterrupted run, killed-and-resumed run, the killed run's history); `extra`
    callbacks take part in all three fits."""
    extra = extra or []
    full = fit(cfg, tmp_path / "full", quiet=True, evaluate=False, callbacks=extra, **data)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        fit(cfg, out, quiet=True, evaluate=False, callbacks=[*extra, KillDuringEpoch(kill_epoch)], **data)
    before = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in before] == list(range(1, kill_epoch))
    # The premise of the test: the last finished epoch is not the best one, so a last.ckpt
    # written only on improvement would send the resume back to an earlier epoch.
    best = best_row(full.history, cfg.monitor)["epoch"]
    assert best < kill_epoch - 1, f"best epoch {best} must come before the kill"
    assert _ckpt(out)["epoch"] == kill_epoch - 2  # Lightning counts from 0: the last finished epoch

    first = FirstEpoch()
    resumed = fit(cfg, out, resume=True, quiet=True, evaluate=False, callbacks=[*extra, first], **data)
    assert first.first == kill_epoch  # continues at the first unfinished epoch
    assert resumed.history[: kill_epoch - 1] == before
    assert resumed.history == full.history
    assert resumed.best_val == full.best_val
    return full.run_dir, out, before


def _cfg(**kw: Any) -> TrainConfig:
    base = dict(model="tiny-32", epochs=5, batch_size=32, lr=5e-3, patience=0, seed=3, warmup_frac=0.1)
    return (DistillConfig if kw.get("teacher") else TrainConfig)(**{**base, **kw})


@pytest.mark.parametrize("balanced", [True, False], ids=["balanced", "shuffled"])
def test_train_killed_after_a_non_best_epoch_resumes_bit_identically(tmp_path: Path, balanced: bool) -> None:
    data = dict(train=toy_split(160, 0), val=toy_split(48, 1, "val"))
    full, resumed, _ = kill_and_resume(_cfg(balanced=balanced), tmp_path, kill_epoch=4, **data)
    assert_same_final_state(full, resumed)


def test_resume_restores_the_global_random_state(tmp_path: Path) -> None:
    data = dict(train=toy_split(160, 0), val=toy_split(48, 1, "val"))
    full, resumed, _ = kill_and_resume(_cfg(), tmp_path, kill_epoch=4, extra=[GlobalRandomNoise()], **data)
    assert_same_final_state(full, resumed)


def test_distill_and_qat_killed_runs_resume_bit_identically(tmp_path: Path) -> None:
    data = dict(train=toy_split(160, 0), val=toy_split(48, 1, "val"))
    teacher = fit(_cfg(model="tiny-48", epochs=2), tmp_path / "teacher", quiet=True, evaluate=False, **data)
    kd = _cfg(teacher=str(teacher.run_dir), method="kd", method_kwargs={"temperature": 2.0, "alpha": 0.5})
    full, resumed, _ = kill_and_resume(kd, tmp_path / "kd", kill_epoch=4, **data)
    assert_same_final_state(full, resumed)
    # QAT: the 8-bit twin of the distilled student, started from its weights.
    qat = _cfg(model="tiny-32-q8", lr=1e-3, init_from=str(full))
    full, resumed, _ = kill_and_resume(qat, tmp_path / "qat", kill_epoch=4, **data)
    assert_same_final_state(full, resumed)


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    from lymphosort.train.module import rng_states, set_rng_states

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.save({"rng": rng_states()}, tmp_path / "s.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    set_rng_states(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]

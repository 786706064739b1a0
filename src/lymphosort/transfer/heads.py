"""A source run made ready for a new task: its head re-made for the new classes (kept by class
name where they match), layers frozen by mode, and the linear fast path (a head fitted
full-batch on cached features: seconds, where an epoch loop over frozen layers takes minutes)."""

from __future__ import annotations

import math
import os
import types
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lymphosort.data.lymphomnist import SplitData
from lymphosort.errors import ConfigError

__all__ = ["MODES", "FeatureCache", "fit_head", "freeze_for", "last_stage", "prepare_model"]

Mode = Literal["linear", "partial", "full"]
MODES: tuple[str, ...] = ("linear", "partial", "full")



def _init_head_by_name(old: nn.Linear, new: nn.Linear, old_classes: Sequence[str], new_classes: Sequence[str]) -> list[str]:
    """Copy head rows for classes the old head already knew (T4/T8 start from "T")."""
    copied = []
    with torch.no_grad():
        for j, c in enumerate(new_classes):
            src = c if c in old_classes else ("T" if c in ("T4", "T8") and "T" in old_classes else None)
            if src is not None:
                i = list(old_classes).index(src)
                new.weight[j] = old.weight[i]
                new.bias[j] = old.bias[i]
                copied.append(f"{c}<-{src}")
    return copied


def last_stage(model: nn.Module) -> str:
    """Module path of the last feature stage: the model's last declared feature module if it
    holds parameters (ResNet `layer4`), else the last parameterised leaf before the head."""
    modules = dict(model.named_modules())
    declared = list(getattr(model, "FEATURE_MODULES", ()) or ())
    if declared and any(True for _ in modules[declared[-1]].parameters()):
        return declared[-1]
    leaves = [
        n for n, m in model.named_modules()
        if n and not n.startswith("head") and any(True for _ in m.parameters(recurse=False))
    ]
    if not leaves:
        raise ConfigError(f"{type(model).__name__} has no parameterised feature stage")
    return leaves[-1]


def _pin_eval(module: nn.Module) -> None:
    # Frozen BatchNorm must keep its running statistics: Lightning calls .train() on the
    # whole model each epoch, so this instance ignores it.
    module.eval()
    module.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), module)  # type: ignore[method-assign]


def freeze_for(model: nn.Module, mode: str) -> list[str]:
    """Set `requires_grad` for `mode`; return the trainable module prefixes."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    trainable = {"linear": ["head"], "partial": [last_stage(model), "head"], "full": [""]}[mode]
    for name, p in model.named_parameters():
        p.requires_grad_(any(name == t or name.startswith(t + ".") or t == "" for t in trainable))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                _pin_eval(m)
    return trainable


def prepare_model(
    run_dir: str | os.PathLike[str], classes: Sequence[str], mode: str, reset_head: bool = False
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Load `run_dir`, fit its head to `classes` and freeze for `mode`.

    The head is kept when the class names match (a T4-vs-B "T" is the T8-vs-B "T": the
    fine-tuning starts from the zero-shot model); otherwise it is reset and rows of known
    classes are copied over. Returns (model, source card, head info).
    """
    from lymphosort.models.checkpoint import load_checkpoint

    model, card = load_checkpoint(run_dir)
    old_classes = list(card.classes)
    info: dict[str, Any] = {"source_classes": old_classes, "kept": True, "copied": []}
    if reset_head or tuple(old_classes) != tuple(classes):
        old = model.head
        model.reset_classifier(len(classes))
        info["kept"] = False
        if not reset_head:
            info["copied"] = _init_head_by_name(old, model.head, old_classes, classes)
    info["trainable"] = freeze_for(model, mode)
    return model, card, info


class FeatureCache:
    """`forward_features` of one frozen extractor, computed once per image and reused
    across shot counts and seeds (rows are filled on demand)."""

    def __init__(self, model: nn.Module, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = batch_size
        self._store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()  # not inference_mode: the cached rows feed the head's autograd
    def get(self, data: SplitData, pos: np.ndarray | None = None) -> torch.Tensor:
        key = id(data.images)
        n = len(data)
        pos = np.arange(n) if pos is None else np.asarray(pos)
        if key not in self._store:
            self._store[key] = (torch.zeros(n, self.model.num_features), torch.zeros(n, dtype=torch.bool))
        feats, done = self._store[key]
        missing = np.asarray(pos)[~done[torch.as_tensor(pos)].numpy()]
        if len(missing):
            spec = self.model.spec
            self.model.eval()
            for s in range(0, len(missing), self.batch_size):
                rows = torch.as_tensor(missing[s : s + self.batch_size])
                x = spec.prepare(data.images[rows])
                feats[rows] = self.model.forward_features(x).float()
                done[rows] = True
        return feats[torch.as_tensor(pos)]


def fit_head(
    head: nn.Linear,
    f_tr: torch.Tensor,
    y_tr: torch.Tensor,
    f_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    lr: float,
    weight_decay: float,
    max_steps: int,
    patience: int,
    seed: int,
) -> list[dict[str, float]]:
    """Full-batch AdamW on the head with class-balanced cross-entropy; the state with the
    best validation balanced accuracy (ties: lower loss) is kept (early stopping)."""
    torch.manual_seed(seed)
    counts = torch.bincount(y_tr, minlength=head.out_features).float()
    weight = torch.where(counts > 0, counts.sum() / (len(counts) * counts.clamp(min=1)), torch.zeros_like(counts))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    best: tuple[float, float] = (-1.0, math.inf)
    best_state = {k: v.clone() for k, v in head.state_dict().items()}
    history, bad, check_every = [], 0, 10
    for step in range(max_steps + 1):
        if step % check_every == 0:
            with torch.no_grad():
                logits = head(f_val)
                v_loss = float(F.cross_entropy(logits, y_val))
                pred = logits.argmax(1)
                recalls = [float((pred[y_val == c] == c).float().mean()) for c in torch.unique(y_val)]
                v_bacc = float(np.mean(recalls))
            history.append({"step": step, "val_loss": v_loss, "val_bacc": v_bacc})
            # A loss gain counts only if it is real (>1%): separable shots would otherwise
            # "improve" forever as the logits grow.
            if v_bacc > best[0] or (v_bacc == best[0] and v_loss < best[1] * 0.99):
                best, bad = (v_bacc, v_loss), 0
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
            else:
                bad += 1
                if bad > patience:
                    break
        if step == max_steps:
            break
        opt.zero_grad()
        loss = F.cross_entropy(head(f_tr), y_tr, weight=weight)
        loss.backward()
        opt.step()
    head.load_state_dict(best_state)
    return history

"""Feature capture by dotted module path, so feature losses (distill.losses) and activation
range calibration (models.quant) never touch model code."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from lymphosort.errors import ConfigError


class FeatureCapture:
    """Record the outputs of named submodules during forward passes.

    >>> with FeatureCapture(model, ["features.3"]) as cap:
    ...     logits = model(x)
    ... feats = cap.features["features.3"]

    Hooks are registered on enter and removed on exit (also on error), so a model is
    never left with stale hooks. `features` keeps the last output of each module, with
    its autograd graph (a student's features must carry gradients into the loss).
    """

    def __init__(self, model: nn.Module, module_paths: Iterable[str] | None) -> None:
        self.model = model
        self.paths: tuple[str, ...] = tuple(module_paths or ())
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        # Resolve now so a wrong path fails before any training step runs.
        self._modules = [self._resolve(p) for p in self.paths]

    def _resolve(self, path: str) -> nn.Module:
        try:
            return self.model.get_submodule(path)
        except AttributeError:
            names = [n for n, _ in self.model.named_modules() if n]
            hint = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
            raise ConfigError(f"model has no submodule {path!r}; its modules are: {hint}") from None

    def _hook(self, path: str):
        def hook(_module: nn.Module, _inputs: tuple, output: object) -> None:
            if isinstance(output, (tuple, list)):  # some blocks return (out, extra)
                output = output[0]
            self.features[path] = output  # type: ignore[assignment]

        return hook

    def attach(self) -> "FeatureCapture":
        if not self._handles:
            self._handles = [m.register_forward_hook(self._hook(p)) for p, m in zip(self.paths, self._modules)]
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "FeatureCapture":
        self.features = {}
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def get(self) -> list[torch.Tensor]:
        """Captured features in the order of `module_paths`."""
        missing = [p for p in self.paths if p not in self.features]
        if missing:
            raise RuntimeError(f"no output captured for {missing}: were they run in the forward pass?")
        return [self.features[p] for p in self.paths]


def spatial_module_paths(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Paths of the modules whose output is a 4-D feature map [N, C, H, W], in the order
    their forward passes finish (one dry pass under no_grad; a container comes right
    after its last child, with the same output).

    Used to pick attention-transfer layers automatically for any registered model.
    """
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, _i: tuple, out: object, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4 and name not in order:
                order.append(name)

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order


def last_spatial_path(model: nn.Module, example: torch.Tensor, skip: Sequence[type] = (nn.Dropout, nn.Identity)) -> str:
    """The last module producing a feature map (the usual attention-transfer layer)."""
    paths = [p for p in spatial_module_paths(model, example) if not isinstance(model.get_submodule(p), tuple(skip))]
    if not paths:
        raise ConfigError(f"{type(model).__name__} has no module with a 4-D output to hook")
    return paths[-1]

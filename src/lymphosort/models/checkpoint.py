"""Checkpoints: weights in safetensors plus one JSON model card, nothing pickled.

A run folder holds `model.safetensors` (the state dict) and `model.json` (the `ModelCard`:
registry name and create kwargs, spec, task, classes, data provenance, split id, resolved
config, metrics, version, timestamp). Loading rebuilds the network through
`models.create_model` from the card and loads the weights strictly, so a checkpoint can
never run code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from lymphosort.atomic import atomic_write, write_text_atomic
from lymphosort.errors import LymphosortError

__all__ = [
    "CARD_FILE",
    "DATA_ROOT_KEY",
    "WEIGHTS_FILE",
    "CheckpointError",
    "ModelCard",
    "load_checkpoint",
    "read_card",
    "jsonable",
    "save_checkpoint",
]

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
CARD_FORMAT = 1
#: Key of `ModelCard.data` naming the data root the model was trained on.
DATA_ROOT_KEY = "root"


class CheckpointError(LymphosortError, ValueError):
    """A checkpoint is missing, unreadable, or its weights do not fit its model card."""


def jsonable(obj: Any) -> Any:
    """Plain JSON types: tuples -> lists, paths -> str, numpy/torch scalars -> numbers."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # NaN/inf are not JSON
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return jsonable(obj.item())
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


@dataclass
class ModelCard:
    """Everything that travels with trained weights (see docs/DESIGN.md)."""

    model: str
    create_kwargs: dict[str, Any] = field(default_factory=dict)
    #: input_size, mean, std, num_classes, kind (as in `ModelSpec`)
    spec: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    classes: list[str] = field(default_factory=list)
    #: data provenance, e.g. {"source": "real"} or {"source": "simulated", "preset": ...}
    data: dict[str, Any] = field(default_factory=dict)
    split_id: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    created: str = ""

    @classmethod
    def from_model(cls, model: nn.Module, **fields: Any) -> "ModelCard":
        """A card whose model name, create kwargs and spec come from `model.spec`."""
        spec = getattr(model, "spec", None)
        if spec is None:
            raise CheckpointError("model has no .spec; build it with lymphosort.models.create_model")
        d = spec.to_dict()
        return cls(
            model=d.pop("name"),
            create_kwargs=dict(d.pop("create_kwargs")),
            spec=d,
            **fields,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"format": CARD_FORMAT, **jsonable(dataclasses.asdict(self))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelCard":
        names = {f.name for f in dataclasses.fields(cls)}
        if "model" not in d:
            raise CheckpointError("model card has no 'model' entry")
        # Unknown keys (from newer versions) are ignored rather than fatal.
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def data_root(self) -> str | None:
        """The data root the model was trained on, or None when the card does not say.

        `data["root"]` on newer cards; older cards of `train`/`distill` runs still name it
        in their resolved config."""
        root = self.data.get(DATA_ROOT_KEY) or self.config.get("data_root")
        return str(root) if root else None

    @property
    def num_classes(self) -> int:
        if "num_classes" in self.spec:
            return int(self.spec["num_classes"])
        if self.classes:
            return len(self.classes)
        raise CheckpointError("model card names neither spec.num_classes nor classes")


def save_checkpoint(run_dir: str | os.PathLike[str], model: nn.Module, card: ModelCard) -> Path:
    """Write `model.safetensors` and `model.json` into `run_dir` (created); return it.

    The card's model name, create kwargs and spec are checked against `model.spec` (a
    mismatch would make the checkpoint unloadable); `version` and `created` are filled in
    when empty.
    """
    from safetensors.torch import save_file

    from lymphosort import __version__

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    spec = getattr(model, "spec", None)
    if spec is not None:
        own = ModelCard.from_model(model)
        if card.model != own.model or jsonable(card.create_kwargs) != jsonable(own.create_kwargs):
            raise CheckpointError(
                f"card describes {card.model!r} {card.create_kwargs} but the model is {own.model!r} {own.create_kwargs}"
            )
        card.spec = {**own.spec, **{k: v for k, v in card.spec.items() if k not in own.spec}}
    if card.classes and len(card.classes) != card.num_classes:
        raise CheckpointError(f"card has {len(card.classes)} classes but the model has {card.num_classes} outputs")
    card.version = card.version or __version__
    card.created = card.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    text = json.dumps(card.to_dict(), indent=2, allow_nan=False)

    # safetensors wants contiguous, unshared CPU tensors.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(run / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata={"format": "pt", "model": card.model}))
    write_text_atomic(run / CARD_FILE, text + "\n")
    return run


def read_card(run_dir: str | os.PathLike[str]) -> ModelCard:
    """Read only the model card of a run folder."""
    path = Path(run_dir) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"no model card {path} (is {run_dir} a run folder written by save_checkpoint?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return ModelCard.from_dict(data)


def load_checkpoint(
    run_dir: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelCard]:
    """Rebuild the model from `model.json` and load `model.safetensors` strictly (eval mode)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lymphosort.models import create_model

    card = read_card(run_dir)
    weights = Path(run_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"no weights file {weights}")
    model = create_model(card.model, num_classes=card.num_classes, **card.create_kwargs)
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {weights}: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:3]
        raise CheckpointError(f"weights in {weights} do not fit model {card.model!r}: {' '.join(first)}") from None
    # Detect a card edited by hand: the rebuilt spec must match what the card says.
    for key in ("input_size", "mean", "std"):
        if key in card.spec and card.spec[key] != getattr(model.spec, key):
            raise CheckpointError(
                f"card spec {key}={card.spec[key]!r} differs from the rebuilt model's {getattr(model.spec, key)!r}"
            )
    return model.to(map_location).eval(), card

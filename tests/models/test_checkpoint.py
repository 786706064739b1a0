"""Checkpoint round trips (safetensors + JSON card), and clear errors on bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lymphosort.models import create_model
from lymphosort.models.checkpoint import CARD_FILE, WEIGHTS_FILE, CheckpointError, ModelCard, load_checkpoint, save_checkpoint

# One model per family (MONAI ResNet basic/bottleneck, reference CNN, tiny CNN, overrides).
CASES = [
    ("compact-teacher", {}),
    ("compact-student", {}),
    ("paper-student2", {}),
    ("tiny-48-s2", {}),
    ("tiny-32", {"channels": [4, 8, 8], "mean": 0.45}),
    ("paper-teacher", {}),
]


def _card(model: torch.nn.Module, classes: list[str]) -> ModelCard:
    return ModelCard.from_model(
        model,
        task="t4-vs-b" if len(classes) == 2 else "3-class",
        classes=classes,
        data={"source": "simulated", "preset": "easy", "seed": 1},
        split_id="lymphosort-split-test",
        config={"lr": 1e-3, "out": Path("/tmp/x"), "sizes": (1, 2)},
        metrics={"val_accuracy": 0.5},
    )


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_round_trip(tmp_path: Path, name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    classes = ["B", "T4", "T8"] if name == "tiny-32" else ["B", "T"]
    model = create_model(name, num_classes=len(classes), **kwargs)
    # Move batch-norm statistics off their defaults so buffers are checked too.
    model.train()
    s = model.spec.input_size
    with torch.no_grad():
        model(torch.randn(4, 1, s, s))
    model.eval()
    save_checkpoint(tmp_path, model, _card(model, classes))
    assert (tmp_path / WEIGHTS_FILE).is_file() and (tmp_path / CARD_FILE).is_file()

    loaded, card = load_checkpoint(tmp_path)
    assert card.model == name and card.classes == classes and card.task
    assert card.data["preset"] == "easy" and card.config["out"] == "/tmp/x" and card.config["sizes"] == [1, 2]
    assert card.version and card.created
    assert loaded.spec == model.spec
    assert not loaded.training
    x = torch.randn(3, 1, s, s)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="model card"):
        load_checkpoint(tmp_path)
    model = create_model("tiny-32")
    save_checkpoint(tmp_path, model, ModelCard.from_model(model, classes=["B", "T"]))
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="weights"):
        load_checkpoint(tmp_path)


def test_mismatched_weights(tmp_path: Path) -> None:
    model = create_model("tiny-32")
    save_checkpoint(tmp_path, model, ModelCard.from_model(model, classes=["B", "T"]))
    card = json.loads((tmp_path / CARD_FILE).read_text())
    card["create_kwargs"] = {"channels": [4, 4, 4]}
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path)


def test_corrupt_weights_and_card(tmp_path: Path) -> None:
    model = create_model("tiny-32")
    save_checkpoint(tmp_path, model, ModelCard.from_model(model, classes=["B", "T"]))
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path)
    (tmp_path / CARD_FILE).write_text("{broken")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path)


def test_card_must_describe_the_model(tmp_path: Path) -> None:
    model = create_model("tiny-32")
    with pytest.raises(CheckpointError, match="tiny-48"):
        save_checkpoint(tmp_path, model, ModelCard(model="tiny-48", classes=["B", "T"]))
    with pytest.raises(CheckpointError, match="classes"):
        save_checkpoint(tmp_path, model, ModelCard.from_model(model, classes=["B", "T4", "T8"]))

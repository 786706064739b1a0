"""Registry and model interface: every registered network honours the same contract."""

from __future__ import annotations

import json

import pytest
import torch

from lymphosort.errors import ConfigError
from lymphosort.models import ModelSpec, create_model, get_spec, list_models
from lymphosort.models.quant import float_name

# Float networks only: the quantised twins (Brevitas) have their own tests in test_quant.py.
FLOAT = [n for n in list_models() if float_name(n) is None]
# paper-teacher (ResNet-50) is built once in the checkpoint tests; here the rest.
SMALL = [n for n in FLOAT if n not in ("paper-teacher",)]


def test_list_models_has_presets_and_kinds() -> None:
    names = list_models()
    for expected in ("paper-teacher", "paper-student1", "paper-student2", "resnet18", "compact-teacher",
                     "compact-student", "tiny-32", "tiny-48", "tiny-64"):
        assert expected in names
    assert set(list_models("teacher")) | set(list_models("student")) == set(names)
    assert "compact-teacher" in list_models("teacher") and "tiny-48" in list_models("student")


def test_quantised_twins_are_listed_before_any_is_built() -> None:
    # Registration is eager (lymphosort.models imports quant), not on first create_model.
    assert {"tiny-32-q8", "tiny-32-q4", "paper-student2-q8"} <= set(list_models("student"))


def test_unknown_model_lists_names() -> None:
    with pytest.raises(ConfigError, match="compact-teacher"):
        create_model("no-such-net")


def test_bad_factory_kwarg_is_config_error() -> None:
    with pytest.raises(ConfigError, match="tiny-48"):
        create_model("tiny-48", not_an_arg=3)


@pytest.mark.parametrize("name", SMALL)
def test_interface(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    spec = model.spec
    assert isinstance(spec, ModelSpec) and spec.name == name and spec.num_classes == 3
    assert spec.mean == 0.5 and spec.std == 0.25
    x = torch.randn(2, 1, spec.input_size, spec.input_size)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
        assert feats.ndim == 2 and feats.shape[0] == 2 and feats.shape[1] == model.num_features
        assert logits.shape == (2, 3)
        assert torch.allclose(model.forward_head(feats), logits)
        # Logits, not probabilities.
        assert not torch.allclose(logits.softmax(1).sum(1), logits.sum(1))
        before = model.forward_features(x)
        model.reset_classifier(5)
        assert model.spec.num_classes == 5
        assert model(x).shape == (2, 5)
        assert torch.equal(model.forward_features(x), before)  # features kept
    paths = model.feature_modules()
    assert paths and all(isinstance(m, torch.nn.Module) for m in paths.values())


def test_paper_student2_is_the_reference_network() -> None:
    m = create_model("paper-student2")
    assert sum(p.numel() for p in m.parameters()) == 5682
    assert m.spec.input_size == 48
    assert m.head.in_features == 1600
    kinds = [type(l).__name__ for l in m.features]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d"]


@pytest.mark.parametrize("name", [n for n in FLOAT if n.startswith("tiny-")])
def test_tiny_students_are_small_and_fpga_friendly(name: str) -> None:
    m = create_model(name)
    assert sum(p.numel() for p in m.parameters()) <= 6000
    allowed = (torch.nn.Conv2d, torch.nn.ReLU, torch.nn.MaxPool2d, torch.nn.AvgPool2d, torch.nn.Linear, torch.nn.Sequential)
    assert all(isinstance(mod, allowed) for mod in m.modules() if mod is not m)


def test_overrides_recorded_in_spec() -> None:
    m = create_model("tiny-48", input_size=32, channels=[4, 8, 8], mean=0.4)
    assert m.spec.input_size == 32 and m.spec.mean == 0.4
    assert m.spec.create_kwargs == {"input_size": 32, "channels": [4, 8, 8], "mean": 0.4}
    assert get_spec("tiny-48", 2, input_size=32).input_size == 32
    assert m(torch.zeros(1, 1, 32, 32)).shape == (1, 2)


def test_compact_student_is_cheaper_than_compact_teacher() -> None:
    from lymphosort.evaluate.efficiency import count_macs

    t, s = create_model("compact-teacher"), create_model("compact-student")
    assert count_macs(s, 64) <= 0.5 * count_macs(t, 64)


def test_field_of_view_travels_with_the_spec_and_prepares_the_centre() -> None:
    m = create_model("tiny-32-centre")
    assert m.spec.fov == 32 and m.spec.input_size == 32 and create_model("tiny-32").spec.fov is None
    assert create_model("tiny-32-centre-q8").spec.fov == 32  # the QAT twin sees the same pixels
    assert m.spec.to_dict()["fov"] == 32 and get_spec("tiny-32-centre", 2, fov=40).fov == 40
    images = torch.zeros(2, 64, 64, dtype=torch.uint8)
    images[:, 16:48, 16:48] = 255  # a bright 32x32 centre on black
    x = m.spec.prepare(images)
    assert x.shape == (2, 1, 32, 32)
    assert torch.allclose(x, torch.full_like(x, (1.0 - 0.5) / 0.25))  # only the centre, at native scale
    whole = create_model("tiny-32").spec.prepare(images)
    assert whole.min() < 0  # the whole crop shrunk: the black border is in it


def test_he_init_keeps_the_signal_through_the_tiny_stack() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 1, 32, 32)

    def feature_std(init: str) -> float:
        torch.manual_seed(1)
        m = create_model("tiny-32-centre", init=init)
        with torch.no_grad():
            return float(m.forward_features(x).std())

    # PyTorch's default conv init shrinks the activations layer by layer without batch norm.
    assert feature_std("he") > 2 * feature_std("torch")
    with pytest.raises(ConfigError, match="init"):
        create_model("tiny-32-centre", init="xavier")


def test_former_student_names_still_build_and_load(tmp_path) -> None:
    """tiny-32c / tiny-32w / tiny-48w were renamed by what they read; old runs still load."""
    import torch

    from lymphosort.models import create_model, list_models
    from lymphosort.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint
    from lymphosort.models.registry import canonical_name

    for former, current in (("tiny-32c", "tiny-32-centre"), ("tiny-32w", "tiny-32-whole"),
                            ("tiny-48w", "tiny-48-whole"), ("tiny-32w-q8", "tiny-32-whole-q8")):
        assert canonical_name(former) == current and former not in list_models()
        assert create_model(former).spec == create_model(current).spec
    torch.manual_seed(0)
    old = create_model("tiny-32w")
    run = save_checkpoint(tmp_path / "run", old, ModelCard.from_model(old, task="t4-vs-b", classes=["B", "T4"]))
    card = json.loads((run / "model.json").read_text())
    card["model"] = card["spec"]["name"] = "tiny-32w"  # as a run folder written before the rename records it
    (run / "model.json").write_text(json.dumps(card))
    model, _ = load_checkpoint(run)
    assert model.spec.name == "tiny-32-whole" and model.spec.fov is None
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(model.eval()(x), old.eval()(x))

"""Brevitas QAT students: registry, fixed-point scales, float fine-tune start, QAT training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("brevitas")

from lymphosort.errors import ConfigError  # noqa: E402
from lymphosort.models import create_model, list_models  # noqa: E402


def test_registered_twins_and_names() -> None:
    from lymphosort.models.quant import float_name, quant_name

    names = list_models("student")
    assert {"tiny-32-q8", "tiny-32-q4", "paper-student2-q8", "tiny-64-q4"} <= set(names)
    assert quant_name("tiny-32", 4) == "tiny-32-q4" and float_name("tiny-32-q4") == "tiny-32"
    assert float_name("tiny-32") is None


@pytest.mark.parametrize("bits", [8, 4])
def test_scales_are_powers_of_two_and_output_is_float(bits: int) -> None:
    torch.manual_seed(0)
    m = create_model(f"tiny-32-q{bits}").eval()
    y = m(torch.randn(3, 1, 32, 32))
    assert y.shape == (3, 2) and isinstance(y, torch.Tensor) and type(y) is torch.Tensor
    wq = m.features.conv2.quant_weight()
    assert float(torch.log2(wq.scale)).is_integer() and int(wq.bit_width) == bits
    assert int(wq.int().abs().max()) <= 2 ** (bits - 1) - 1


def test_non_power_of_two_average_pool_is_refused() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        create_model("tiny-48-q8")  # final map 6x6: a mean over 36 needs a divider


def test_per_layer_bits_and_checkpoint_round_trip(tmp_path: Path) -> None:
    from lymphosort.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    m = create_model("tiny-32-q8", bits=[8, 6, 6, 8]).eval()
    assert m.bits == [8, 6, 6, 8]
    save_checkpoint(tmp_path, m, ModelCard.from_model(m, task="t4-vs-b", classes=["B", "T4"]))
    m2, card = load_checkpoint(tmp_path)
    x = torch.randn(4, 1, 32, 32)
    assert card.model == "tiny-32-q8" and torch.equal(m(x), m2(x))


def test_quantize_from_float_keeps_the_float_weights() -> None:
    from lymphosort.models.quant import quantize_from_float

    torch.manual_seed(0)
    f = create_model("tiny-32")
    q = quantize_from_float(f, bits=8)
    assert q.spec.name == "tiny-32-q8"
    assert torch.equal(q.features.conv1.weight, f.features.conv1.weight)
    q6 = quantize_from_float(f, bits=6)
    assert q6.bits == [6, 6, 6, 6] and q6.act_bits == [6, 6, 6]
    mixed = quantize_from_float(f, bits=[8, 4, 4, 4], act_bits=[8, 4, 4])
    assert [int(mixed.features.get_submodule(f"relu{i}").act_quant.bit_width()) for i in (1, 2, 3)] == [8, 4, 4]
    assert int(mixed.features.conv2.quant_weight().bit_width) == 4
    assert mixed.spec.name == "tiny-32-q8"  # no name asked: a registered twin with its widths overridden
    named = quantize_from_float(f, bits=[8, 4, 4, 4], act_bits=[8, 6, 4], name="tiny-32-q4")
    assert named.spec.name == "tiny-32-q4" and named.bits == [8, 4, 4, 4] and named.act_bits == [8, 6, 4]
    assert quantize_from_float(f, bits=4, name="tiny-32-q8").bits == [4, 4, 4, 4]
    with pytest.raises(ConfigError, match="not a QAT twin"):
        quantize_from_float(f, bits=4, name="tiny-32-whole-q4")
    with pytest.raises(ConfigError, match="one per conv's ReLU"):
        quantize_from_float(f, bits=4, act_bits=[8, 4])


def test_a_narrower_student_keeps_its_channels_in_its_twin_and_checkpoint(tmp_path: Path) -> None:
    """`--model-kwargs channels=[...]` on the float student: its QAT twin has the same shape,
    takes its weights, and reloads from the checkpoint's card."""
    from lymphosort.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint
    from lymphosort.models.quant import quantize_from_float

    torch.manual_seed(0)
    f = create_model("tiny-32-whole", channels=[8, 12, 16])
    q = quantize_from_float(f, bits=[8, 4, 4, 4], act_bits=[8, 6, 4], name="tiny-32-whole-q4")
    assert q.features.conv2.weight.shape == (12, 8, 3, 3) and q.head.weight.shape == (2, 16 * 4 * 4)
    assert torch.equal(q.features.conv3.weight, f.features.conv3.weight)
    save_checkpoint(tmp_path, q, ModelCard.from_model(q, task="t4-vs-b", classes=["B", "T4"]))
    q2, _ = load_checkpoint(tmp_path)
    x = torch.randn(3, 1, 32, 32)
    assert torch.equal(q.eval()(x), q2.eval()(x))


def test_activation_ranges_start_from_the_float_activations() -> None:
    from lymphosort.models.quant import init_activation_ranges, quantize_from_float

    torch.manual_seed(0)
    f = create_model("tiny-32-centre").eval()
    with torch.no_grad():
        f.features.conv3.weight.mul_(8.0)  # deep activations far beyond the default range of 4
    x = torch.randn(64, 1, 32, 32)
    q = quantize_from_float(f, bits=8)
    with torch.no_grad():
        before = (q(x) - f(x)).abs().max().item()
        ranges = init_activation_ranges(q, f, [x[:32], x[32:]], quantile=1.0)
        after = (q(x) - f(x)).abs().max().item()
        out3 = f.features.relu3(f.features.conv3(f.features.pool2(f.features.relu2(f.features.conv2(
            f.features.pool1(f.features.relu1(f.features.conv1(x))))))))
    assert set(ranges) == {"features.relu1", "features.relu2", "features.relu3"}
    assert ranges["features.relu3"] == pytest.approx(out3.max().item(), rel=1e-5) and ranges["features.relu3"] > 4
    relu3 = q.features.relu3(torch.full((1, 24, 2, 2), ranges["features.relu3"]))
    assert float(relu3.value.max()) >= 0.99 * ranges["features.relu3"]  # no longer clipped at 4
    assert after < before / 4
    # mid-bin: the same power-of-two ranges, the parameter half a step below the rounding edge
    scale = q.features.relu3.act_quant.scale()
    init_activation_ranges(q, f, [x[:32], x[32:]], quantile=1.0, mid_bin=True)
    impl = q.features.relu3.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl
    assert float(impl.value) % 1 == 0.5 and torch.equal(q.features.relu3.act_quant.scale(), scale)


def test_qat_distill_trains(tmp_path: Path) -> None:
    """A short distillation run of the 8-bit twin learns the toy task (QAT trains)."""
    from lymphosort.models.checkpoint import load_checkpoint
    from lymphosort.train.config import DistillConfig, TrainConfig
    from lymphosort.train.fit import fit
    from tests.train.helpers import toy_split

    teacher = tmp_path / "teacher"
    fit(TrainConfig(model="tiny-32", epochs=2, batch_size=32, lr=5e-3, patience=0), teacher, quiet=True,
        train=toy_split(128, 0), val=toy_split(32, 1, "val"), evaluate=False)
    cfg = DistillConfig(model="tiny-32-q8", teacher=str(teacher), method="kd", epochs=3, batch_size=32, lr=5e-3,
                      patience=0)
    fit(cfg, tmp_path / "qat", quiet=True, train=toy_split(128, 2), val=toy_split(64, 3, "val"), evaluate=False)
    model, card = load_checkpoint(tmp_path / "qat")
    assert card.model == "tiny-32-q8"
    val = toy_split(64, 4, "val")
    from lymphosort.data.transforms import to_model_input

    with torch.no_grad():
        pred = model(to_model_input(val.images, 32, model.spec.mean, model.spec.std)).argmax(1)
    assert (pred == val.labels).float().mean() >= 0.9


def test_qat_twin_names_the_registered_twin() -> None:
    from lymphosort.models.quant import qat_twin

    assert qat_twin("tiny-32", 8) == ("tiny-32-q8", {})
    assert qat_twin("tiny-32-q8", 4) == ("tiny-32-q4", {})  # a twin's twin is the float model's
    assert qat_twin("tiny-64", 6) == ("tiny-64-q8", {"bits": 6})
    with pytest.raises(ConfigError):
        qat_twin("tiny-32", 12)


def test_mse_weight_scales_are_learned_powers_of_two_of_least_error(tmp_path: Path) -> None:
    """weight_scale="mse": each weight range starts at the power of two of least squared error
    (never coarser than the max rule's) and is a parameter from construction, so a checkpoint
    saved before or after training reloads strictly and gives the same logits."""
    from lymphosort.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint
    from lymphosort.models.quant import quantize_from_float

    torch.manual_seed(0)
    f = create_model("tiny-32-whole")
    q_max = quantize_from_float(f, bits=4)
    q_mse = quantize_from_float(f, bits=4, weight_scale="mse")
    assert q_mse.weight_scale == "mse" and q_max.weight_scale == "max"
    for path in ("features.conv1", "features.conv2", "features.conv3", "head"):
        a, b = q_max.get_submodule(path), q_mse.get_submodule(path)
        w = a.weight.detach()
        err_max = float(((a.quant_weight().value - w) ** 2).sum())
        err_mse = float(((b.quant_weight().value - w) ** 2).sum())
        s_max, s_mse = float(a.quant_weight().scale), float(b.quant_weight().scale)
        assert s_mse <= s_max and err_mse <= err_max
        assert math.log2(s_mse).is_integer()
        assert float(b.weight_quant.tensor_quant.scaling_impl.value) % 1 == 0.5  # mid-bin: a step cannot flip it
    assert "features.conv2.weight_quant.tensor_quant.scaling_impl.value" in create_model(
        "tiny-32-whole-q4", weight_scale="mse").state_dict()
    save_checkpoint(tmp_path, q_mse, ModelCard.from_model(q_mse, task="t4-vs-b", classes=["B", "T4"]))
    q2, _ = load_checkpoint(tmp_path)
    x = torch.randn(3, 1, 32, 32)
    assert torch.equal(q_mse(x), q2(x))
    with pytest.raises(ConfigError, match="weight_scale"):
        create_model("tiny-32-whole-q4", weight_scale="percentile")

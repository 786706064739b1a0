"""The students: small ones built only from FPGA-friendly layers (conv, ReLU, max/avg pooling,
linear), and the ResNet-class ones on the teachers' MONAI ResNet (`paper-student1`, ResNet-18
at 64x64, the reference's first student; `compact-student`, the compact teacher's family at
one block per stage, 37% of its MACs).

The small ones have no batch norm (nothing to fold) and no softmax in the module; each is one
class, `ConvStudent`: a `features` stack named `conv{i}`, `relu{i}`, `pool{i}` (and `avgpool`),
flattened into a linear `head`. Feature-distillation module paths: "features.conv{i}",
"features.relu{i}", "features.pool{i}" (`feature_modules()` lists the ReLU outputs).

- `paper-student2`: the reference 5,682-parameter CNN at 48x48: conv 1->16 3x3 (valid),
  ReLU, max pool 2, conv 16->16 3x3 (valid), ReLU, max pool 2, flatten (1,600), linear.
- `tiny-*`: our candidates (<= 6,000 parameters each): 3-4 blocks of "same"-padded conv +
  ReLU + max pool 2, then an average pool down to `pool_out` x `pool_out`, then linear.
  The name says what a student reads: `tiny-32-centre` the centred 32x32 window of the crop
  at native resolution (`ModelSpec.fov`), `tiny-32-whole` / `tiny-48-whole` the whole crop
  shrunk to 32x32 / 48x48 (formerly tiny-32c, tiny-32w, tiny-48w: those names still load).
  Which one is best is decided by measurement (BENCHMARKS.md), not here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn

from lymphosort.errors import ConfigError
from lymphosort.models.registry import ClassifierMixin, register_alias, register_model
from lymphosort.models.teachers import COMPACT_STEM, ResNetClassifier, build_resnet, build_resnet18

__all__ = ["ConvStudent", "RENAMED", "TINY_VARIANTS", "init_weights_"]


class ConvStudent(ClassifierMixin, nn.Module):
    """conv -> ReLU -> max pool blocks, optional average pool, flatten, linear head.

    `padding="valid"` keeps the reference network's shapes; `"same"` halves the map per block
    exactly (input sizes divisible by 2**blocks). `pool_out` (if set) average-pools the last
    map down to `pool_out` x `pool_out` with a fixed kernel (a plain AvgPool2d, which FPGA
    flows support, rather than an adaptive pool).
    """

    def __init__(
        self,
        num_classes: int,
        input_size: int,
        channels: Sequence[int],
        kernel: int = 3,
        padding: str = "same",
        pool_out: int | None = None,
        init: str = "torch",
    ) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ConfigError(f"padding must be 'same' or 'valid', not {padding!r}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in, size = 1, int(input_size)
        for i, c_out in enumerate(channels, start=1):
            pad = kernel // 2 if padding == "same" else 0
            layers[f"conv{i}"] = nn.Conv2d(c_in, int(c_out), kernel, padding=pad)
            layers[f"relu{i}"] = nn.ReLU()
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            size = (size + 2 * pad - kernel + 1) // 2
            c_in = int(c_out)
        if size < 1:
            raise ConfigError(f"input size {input_size} is too small for {len(channels)} blocks")
        if pool_out is not None and pool_out < size:
            if size % pool_out:
                raise ConfigError(f"final map {size}x{size} is not divisible into {pool_out}x{pool_out}")
            layers["avgpool"] = nn.AvgPool2d(size // pool_out)
            size = pool_out
        self.features = nn.Sequential(layers)
        self.head = nn.Linear(c_in * size * size, num_classes)
        self.FEATURE_MODULES = tuple(f"features.relu{i}" for i in range(1, len(channels) + 1))
        init_weights_(self, init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)


def init_weights_(model: nn.Module, init: str) -> None:
    """"torch": PyTorch's defaults (the reference students). "he": Kaiming-normal convs with
    zero bias, which keeps the activation scale through ReLU layers without batch norm."""
    if init not in ("torch", "he"):
        raise ConfigError(f"init must be 'torch' or 'he', not {init!r}")
    if init == "he":
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


@register_model("paper-student2", input_size=48, kind="student")
def paper_student2(num_classes: int = 2, input_size: int = 48) -> ConvStudent:
    """The reference 5,682-parameter CNN (two valid 3x3 convs of 16, max pools, linear)."""
    return ConvStudent(num_classes, input_size, channels=(16, 16), kernel=3, padding="valid")


#: name -> registration (input size, field of view) and `ConvStudent` arguments.
#: Parameters at 2 classes: tiny-32 4,778; tiny-48 5,394; tiny-48-s2 3,698; tiny-64 5,922;
#: tiny-32-centre 5,498; tiny-32-whole 5,498; tiny-48-whole 5,162.
TINY_VARIANTS: dict[str, dict[str, Any]] = {
    # 32 -> 16 -> 8 -> 4, global average: cheapest in MACs (whole 64x64 crop shrunk to 32).
    "tiny-32": {"input_size": 32, "channels": (8, 16, 24), "kernel": 3, "pool_out": 1},
    # 48 -> 24 -> 12 -> 6, global average: the reference student's input size.
    "tiny-48": {"input_size": 48, "channels": (12, 16, 24), "kernel": 3, "pool_out": 1},
    # 48 with a 2x2 spatial summary instead of global average (keeps coarse layout).
    "tiny-48-s2": {"input_size": 48, "channels": (8, 16, 16), "kernel": 3, "pool_out": 2},
    # 64 (native resolution), four blocks 64 -> 32 -> 16 -> 8 -> 4, global average.
    "tiny-64": {"input_size": 64, "channels": (8, 16, 16, 16), "kernel": 3, "pool_out": 1},
    # The centred 32x32 of the crop at native resolution (the cell is ~20 px across, so it
    # fits; shrinking the whole crop to 32 blurs the texture that separates the classes),
    # the 4x4 map kept spatially for the head (global average left tiny nets on a long
    # chance-level plateau), He initialisation. Measured best: see BENCHMARKS.md.
    "tiny-32-centre": {"input_size": 32, "fov": 32, "channels": (8, 16, 24), "kernel": 3, "pool_out": 4, "init": "he"},
    # tiny-32-centre's network on the whole crop shrunk to 32x32. On LymphoMNIST's
    # microscope (LymphoSim 3.x) the cell fills the crop, so a centred 32x32 window sees only
    # its inside; the shrunk crop keeps the outline and the relief of the rim.
    "tiny-32-whole": {"input_size": 32, "channels": (8, 16, 24), "kernel": 3, "pool_out": 4, "init": "he"},
    # the whole crop at the reference student's 48x48: 48 -> 24 -> 12 -> 6, pooled to 3x3.
    "tiny-48-whole": {"input_size": 48, "channels": (8, 16, 24), "kernel": 3, "pool_out": 3, "init": "he"},
}


def _register_tiny(name: str, args: dict[str, Any]) -> None:
    arch = {k: v for k, v in args.items() if k not in ("input_size", "fov")}
    size = int(args["input_size"])

    def factory(num_classes: int = 2, input_size: int = size, **overrides: Any) -> ConvStudent:
        return ConvStudent(num_classes, input_size, **{**arch, **overrides})

    view = f"centred {args['fov']}x{args['fov']} field" if args.get("fov") else "whole crop"
    factory.__doc__ = (
        f"Tiny CNN at {size}x{size} ({view}): conv{arch['kernel']}x{arch['kernel']} blocks "
        f"{list(arch['channels'])}, pooled to {arch['pool_out']}x{arch['pool_out']}, linear."
    )
    register_model(name, input_size=size, kind="student", fov=args.get("fov"))(factory)


#: former names of the students above (their run folders and commands still resolve)
RENAMED: dict[str, str] = {"tiny-32c": "tiny-32-centre", "tiny-32w": "tiny-32-whole", "tiny-48w": "tiny-48-whole"}

for _name, _args in TINY_VARIANTS.items():
    _register_tiny(_name, _args)
for _former, _current in RENAMED.items():
    register_alias(_former, _current)


@register_model("paper-student1", input_size=64, kind="student")
def paper_student1(num_classes: int = 2, input_size: int = 64, **kwargs: Any) -> ResNetClassifier:
    """ResNet-18 at 64x64, the reference project's first student."""
    return build_resnet18(num_classes, kwargs)


@register_model("compact-student", input_size=64, kind="student")
def compact_student(num_classes: int = 2, input_size: int = 64, **kwargs: Any) -> ResNetClassifier:
    """Compact teacher's family at half depth and narrower late stages (basic [1,1,1,1],
    widths 16, 32, 48, 96): 37% of the teacher's MACs. At widths up to 128 (46% of its
    MACs) it measured only 1.95x faster at batch 1 on one core, short of the 2x aim."""
    return build_resnet(
        num_classes,
        {"block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [16, 32, 48, 96], **COMPACT_STEM},
        kwargs,
    )

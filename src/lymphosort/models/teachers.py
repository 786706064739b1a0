"""Teachers built on MONAI's 2-D ResNet, one grey input channel (the ResNet-class students,
`paper-student1` and `compact-student`, live in students.py and reuse `build_resnet`).

Feature-distillation module paths: "conv1", "layer1" .. "layer4" (the pooled, flattened
output of "layer4" is `forward_features`).

Presets
- `paper-teacher`: ResNet-50 at 120x120, the reference project's teacher. Stem as in the
  ImageNet ResNet (7x7 stride-2 conv, 3x3 max pool; projection shortcuts without bias).
- `resnet18`: ResNet-18 at 64x64 with the same stem (the "ResNet-18-class" teacher).
- `compact-teacher`: the embedded default teacher, sized for CPU training at 64x64: basic
  blocks [2,2,2,2], widths [16,32,64,128], 3x3 stride-2 stem, no max pool.
Any MONAI `ResNet` argument can be overridden through `create_model(name, **kwargs)`; the
override is recorded in the spec's `create_kwargs`, so checkpoints rebuild it.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import ResNet
from torch import nn

from lymphosort.models.registry import ClassifierMixin, register_model

__all__ = ["ResNetClassifier"]


class ResNetClassifier(ClassifierMixin, ResNet):
    """MONAI ResNet (2-D, 1 channel) without its fc, plus the shared `head` interface."""

    FEATURE_MODULES = ("conv1", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, num_classes: int, **resnet_kwargs: Any) -> None:
        kwargs: dict[str, Any] = {"spatial_dims": 2, "n_input_channels": 1, **resnet_kwargs}
        ResNet.__init__(self, num_classes=num_classes, **{**kwargs, "feed_forward": True})
        # MONAI sizes its fc from the block expansion and widen factor; it becomes our
        # `head`, and with fc=None MONAI's forward ends at the pooled, flattened features.
        self.head: nn.Linear = self.fc  # type: ignore[assignment]
        self.fc = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return ResNet.forward(self, x)


def build_resnet(num_classes: int, defaults: dict[str, Any], overrides: dict[str, Any]) -> ResNetClassifier:
    return ResNetClassifier(num_classes=num_classes, **{**defaults, **overrides})


# The ImageNet-style stem (torchvision's ResNet layout), with 1 input channel.
_IMAGENET_STEM = {"conv1_t_size": 7, "conv1_t_stride": 2, "no_max_pool": False, "bias_downsample": False}
# A light stem for 64x64 crops: one 3x3 stride-2 conv gives 32x32 maps into layer1.
COMPACT_STEM = {"conv1_t_size": 3, "conv1_t_stride": 2, "no_max_pool": True, "bias_downsample": False}


@register_model("paper-teacher", input_size=120, kind="teacher")
def paper_teacher(num_classes: int = 2, input_size: int = 120, **kwargs: Any) -> ResNetClassifier:
    """ResNet-50 (bottleneck [3,4,6,3], widths 64..512) at 120x120, the reference teacher."""
    return build_resnet(
        num_classes,
        {"block": "bottleneck", "layers": [3, 4, 6, 3], "block_inplanes": [64, 128, 256, 512], **_IMAGENET_STEM},
        kwargs,
    )


def build_resnet18(num_classes: int, kwargs: dict[str, Any]) -> ResNetClassifier:
    return build_resnet(
        num_classes,
        {"block": "basic", "layers": [2, 2, 2, 2], "block_inplanes": [64, 128, 256, 512], **_IMAGENET_STEM},
        kwargs,
    )


@register_model("resnet18", input_size=64, kind="teacher")
def resnet18(num_classes: int = 2, input_size: int = 64, **kwargs: Any) -> ResNetClassifier:
    """ResNet-18 at 64x64 (the "ResNet-18-class" teacher)."""
    return build_resnet18(num_classes, kwargs)


@register_model("compact-teacher", input_size=64, kind="teacher")
def compact_teacher(num_classes: int = 2, input_size: int = 64, **kwargs: Any) -> ResNetClassifier:
    """Narrow ResNet (basic [2,2,2,2], widths 16..128, 3x3/2 stem): the CPU default teacher."""
    return build_resnet(
        num_classes,
        {"block": "basic", "layers": [2, 2, 2, 2], "block_inplanes": [16, 32, 64, 128], **COMPACT_STEM},
        kwargs,
    )



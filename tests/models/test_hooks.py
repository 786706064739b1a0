from __future__ import annotations

import pytest
import torch
from torch import nn

from lymphosort.models.hooks import FeatureCapture, last_spatial_path, spatial_module_paths
from lymphosort.errors import ConfigError


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, stride=2), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def test_captures_the_named_module_and_removes_hooks_on_exit() -> None:
    net = _net()
    x = torch.randn(2, 1, 8, 8)
    with FeatureCapture(net, ["2.0", "1"]) as cap:
        net(x)
        assert len(net[2][0]._forward_hooks) == 1
    expected_relu = torch.relu(net[0](x))
    assert torch.allclose(cap.features["1"], expected_relu)
    assert torch.allclose(cap.features["2.0"], net[2][0](expected_relu))
    assert [t.shape for t in cap.get()] == [(2, 8, 4, 4), (2, 4, 8, 8)]
    assert all(len(m._forward_hooks) == 0 for m in net.modules())


def test_hooks_are_removed_even_on_error_and_features_keep_gradients() -> None:
    net = _net()
    with pytest.raises(RuntimeError):
        with FeatureCapture(net, ["0"]):
            net(torch.randn(2, 3, 8, 8))  # wrong channel count
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    with FeatureCapture(net, ["0"]) as cap:
        net(torch.randn(2, 1, 8, 8))
    cap.features["0"].sum().backward()
    assert net[0].weight.grad is not None


def test_unknown_path_is_a_config_error_naming_the_modules() -> None:
    with pytest.raises(ConfigError, match="no submodule 'nope'"):
        FeatureCapture(_net(), ["nope"])


def test_spatial_paths_in_execution_order() -> None:
    net = _net()
    paths = spatial_module_paths(net, torch.randn(1, 1, 8, 8))
    assert paths[:3] == ["0", "1", "2.0"] and "5" not in paths
    assert last_spatial_path(net, torch.randn(1, 1, 8, 8)) == "3"  # pooled map [N,8,1,1] is still 4-D

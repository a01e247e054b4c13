"""Tests for hmdc_modules.condensation.models.convnet.ConvNet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hmdc_modules.condensation.models.convnet import ConvNet


def _manual_forward(net: ConvNet, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """ConvNet's forward written out with torch.nn.functional, reading the parameters by name."""
    pools = []
    h = x
    for k in range(net.depth):
        block = net.features[k]
        h = F.conv2d(h, block.conv.weight, block.conv.bias, padding=1)
        if net.norm == "instance":
            h = F.group_norm(h, net.width, block.norm.weight, block.norm.bias, eps=block.norm.eps)
        elif net.norm == "batch":
            h = F.batch_norm(
                h, block.norm.running_mean, block.norm.running_var, block.norm.weight, block.norm.bias, False
            )
        h = F.relu(h)
        h = F.avg_pool2d(h, 2) if net.pooling == "avg" else F.max_pool2d(h, 2)
        pools.append(h)
    return F.linear(h.flatten(1), net.classifier.weight, net.classifier.bias), pools


def test_parameter_count_at_cifar10_defaults() -> None:
    net = ConvNet()
    assert sum(p.numel() for p in net.parameters()) == 320_010
    assert net.classifier.in_features == 128 * 4 * 4


def test_default_modules_follow_the_reference() -> None:
    net = ConvNet()
    assert len(net.features) == 3
    for block in net.features:
        assert isinstance(block.conv, nn.Conv2d) and block.conv.kernel_size == (3, 3) and block.conv.padding == (1, 1)
        assert isinstance(block.norm, nn.GroupNorm)
        assert block.norm.num_groups == 128 and block.norm.num_channels == 128 and block.norm.affine
        assert isinstance(block.relu, nn.ReLU)
        assert isinstance(block.pool, nn.AvgPool2d)


@pytest.mark.parametrize(
    ("norm", "norm_type"), [("instance", nn.GroupNorm), ("batch", nn.BatchNorm2d), ("none", nn.Identity)]
)
@pytest.mark.parametrize(("pooling", "pool_type"), [("avg", nn.AvgPool2d), ("max", nn.MaxPool2d)])
def test_forward_matches_functional_composition(norm: str, norm_type: type, pooling: str, pool_type: type) -> None:
    torch.manual_seed(0)
    net = ConvNet(num_classes=5, width=6, depth=2, image_size=16, norm=norm, pooling=pooling).eval()
    assert all(isinstance(b.norm, norm_type) and isinstance(b.pool, pool_type) for b in net.features)
    x = torch.randn(3, 3, 16, 16)
    logits, _ = _manual_forward(net, x)
    torch.testing.assert_close(net(x), logits)


def test_feature_layers_name_the_pool_outputs() -> None:
    torch.manual_seed(0)
    net = ConvNet(width=8)
    assert net.feature_layers == ("features.0.pool", "features.1.pool", "features.2.pool")
    captured = {}
    for name in net.feature_layers:
        net.get_submodule(name).register_forward_hook(lambda m, a, out, name=name: captured.__setitem__(name, out))
    x = torch.randn(2, 3, 32, 32)
    _, pools = _manual_forward(net, x)
    net(x)
    for name, expected, side in zip(net.feature_layers, pools, (16, 8, 4), strict=True):
        assert captured[name].shape == (2, 8, side, side)
        torch.testing.assert_close(captured[name], expected)


@settings(deadline=None, max_examples=12)
@given(
    depth=st.integers(1, 4),
    side=st.integers(16, 40),
    width=st.integers(1, 6),
    in_channels=st.integers(1, 4),
    num_classes=st.integers(1, 7),
)
def test_shapes(depth: int, side: int, width: int, in_channels: int, num_classes: int) -> None:
    net = ConvNet(num_classes=num_classes, in_channels=in_channels, width=width, depth=depth, image_size=side)
    final = side // 2**depth
    assert net.classifier.in_features == width * final * final
    assert net(torch.zeros(2, in_channels, side, side)).shape == (2, num_classes)
    assert len(net.feature_layers) == depth


def test_mnist_sizes() -> None:
    net = ConvNet(num_classes=10, in_channels=1, image_size=28)
    assert net.classifier.in_features == 128 * 3 * 3
    assert net(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_reset_parameters_rerandomises_every_layer() -> None:
    torch.manual_seed(0)
    net = ConvNet(width=8, norm="batch")
    with torch.no_grad():
        for block in net.features:
            block.norm.weight.fill_(3.0)
            block.norm.bias.fill_(2.0)
            block.norm.running_mean.fill_(5.0)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    net.reset_parameters()
    for name, p in net.named_parameters():
        if ".conv." in name or name.startswith("classifier."):
            assert not torch.equal(p, before[name]), name
    for block in net.features:
        torch.testing.assert_close(block.norm.weight, torch.ones(8))
        torch.testing.assert_close(block.norm.bias, torch.zeros(8))
        torch.testing.assert_close(block.norm.running_mean, torch.zeros(8))


def test_reset_parameters_resets_groupnorm_affine() -> None:
    net = ConvNet(width=4)
    with torch.no_grad():
        net.features[0].norm.weight.fill_(7.0)
    net.reset_parameters()
    torch.testing.assert_close(net.features[0].norm.weight, torch.ones(4))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"num_classes": 2.5}, TypeError, "num_classes"),
        ({"in_channels": 0}, ValueError, "in_channels"),
        ({"width": -1}, ValueError, "width"),
        ({"width": True}, TypeError, "width"),
        ({"depth": 0}, ValueError, "depth"),
        ({"image_size": "32"}, TypeError, "image_size"),
        ({"image_size": 4, "depth": 3}, ValueError, "`image_size` must be at least 8 for depth 3"),
        ({"norm": "layer"}, ValueError, "`norm` must be one of 'instance', 'batch', 'none', got 'layer'"),
        ({"pooling": "sum"}, ValueError, "`pooling` must be one of 'avg', 'max', got 'sum'"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ConvNet(**kwargs)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.zeros(3, 32, 32), ValueError, r"`x` must have 4 dimensions, got shape \(3, 32, 32\)"),
        (torch.zeros(2, 1, 32, 32), ValueError, r"`x` must have shape \(B, 3, 32, 32\), got \(2, 1, 32, 32\)"),
        (torch.zeros(2, 3, 28, 28), ValueError, r"`x` must have shape \(B, 3, 32, 32\), got \(2, 3, 28, 28\)"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.long), TypeError, "floating-point"),
    ],
)
def test_bad_input(x: torch.Tensor, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ConvNet(width=4)(x)

"""Tests for hmdc_modules.adapters: every adapter's features are checked against tensors computed by hand."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import Tensor, nn

from hmdc_modules.adapters import (
    CNNAdapter,
    FeatureAdapter,
    HookAdapter,
    TimmAdapter,
    TorchvisionAdapter,
    ViTAdapter,
    auto_adapter,
    default_output_fn,
    disable_fused_attention,
    to_feature_map,
)
from hmdc_modules.condensation.models.convnet import ConvNet
from hmdc_modules.features import AdapterOutput, FeatureMap, FeatureSpec

# ----------------------------------------------------------------------------------------------------------------
# helpers written for the tests (independent of the adapters' own hooking)


@contextmanager
def captured(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Record the outputs of the named submodules while the block runs."""
    out: dict[str, Any] = {}
    handles = [model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: out.__setitem__(n, o)) for n in names]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


@contextmanager
def call_count(module: nn.Module) -> Iterator[list[int]]:
    """Count the calls of ``module`` while the block runs."""
    count = [0]
    handle = module.register_forward_pre_hook(lambda m, a: count.__setitem__(0, count[0] + 1))
    try:
        yield count
    finally:
        handle.remove()


def tokens_to_map(tokens: Tensor, prefix: int, grid: tuple[int, int]) -> Tensor:
    """Patch tokens [B, P+N, D] -> [B, D, gh, gw], row-major, element by element (slow but obviously right)."""
    b, _, d = tokens.shape
    out = torch.empty(b, d, *grid, dtype=tokens.dtype)
    for i in range(grid[0]):
        for j in range(grid[1]):
            out[:, :, i, j] = tokens[:, prefix + i * grid[1] + j, :]
    return out


def assert_map(fm: FeatureMap, spatial: Tensor, semantic: Tensor) -> None:
    assert isinstance(fm, FeatureMap)
    torch.testing.assert_close(fm.spatial, spatial)
    torch.testing.assert_close(fm.semantic, semantic)


def all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(*self.dims)


class ChannelsLastNet(nn.Module):
    """A small CNN whose stage outputs are NHWC (as in channels-last ConvNeXt-style code)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.to_nhwc = Permute(0, 2, 3, 1)
        self.mix = nn.Linear(6, 8)  # acts on the channel (last) axis
        self.to_nchw = Permute(0, 3, 1, 2)
        self.head = nn.Linear(8, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mix(self.to_nhwc(self.stem(x)))
        return self.head(self.to_nchw(h).mean(dim=(2, 3)))


class TupleNet(nn.Module):
    """Returns (logits, aux) and has a submodule returning a tuple."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            y = self.conv(x)
            return y, y.sum()

    def __init__(self) -> None:
        super().__init__()
        self.block = self.Block()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, aux = self.block(x)
        return self.fc(y.mean(dim=(2, 3))), aux


def small_sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 7),
    )


def timm_vit(**kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=32, patch_size=4, **kwargs)


def reg_vit(img_size: int | tuple[int, int] = 32, **kwargs: Any) -> TimmViT:
    torch.manual_seed(0)
    return TimmViT(
        img_size=img_size, patch_size=4, embed_dim=32, depth=2, num_heads=2, reg_tokens=4, num_classes=10, **kwargs
    )


# ----------------------------------------------------------------------------------------------------------------
# to_feature_map


def test_nchw_map_and_mean_semantic() -> None:
    t = torch.randn(2, 3, 4, 5)
    fm = to_feature_map(t, "nchw")
    assert fm.spatial is t
    torch.testing.assert_close(fm.semantic, t.sum(dim=(2, 3)) / 20)


def test_nhwc_is_permuted() -> None:
    t = torch.randn(2, 4, 5, 3)
    fm = to_feature_map(t, "nhwc")
    assert fm.spatial.shape == (2, 3, 4, 5)
    for c in range(3):
        torch.testing.assert_close(fm.spatial[:, c], t[..., c])
    torch.testing.assert_close(fm.semantic, t.mean(dim=(1, 2)))


def test_nlc_cls_and_row_major_patches() -> None:
    t = torch.randn(2, 1 + 9, 5)
    fm = to_feature_map(t, "nlc", num_prefix_tokens=1)
    assert_map(fm, tokens_to_map(t, 1, (3, 3)), t[:, 0])
    # "auto" without prefix tokens is the patch mean
    fm0 = to_feature_map(t[:, 1:], "nlc")
    assert_map(fm0, tokens_to_map(t, 1, (3, 3)), t[:, 1:].mean(dim=1))


@pytest.mark.parametrize(
    ("semantic", "expected"),
    [
        ("auto", lambda t: t[:, 0]),
        ("cls", lambda t: t[:, 0]),
        ("prefix_mean", lambda t: (t[:, 0] + t[:, 1] + t[:, 2]) / 3),
        ("mean", lambda t: t[:, 3:].mean(dim=1)),
    ],
)
def test_nlc_semantic_variants(semantic: str, expected: Any) -> None:
    t = torch.randn(2, 3 + 6, 4)
    fm = to_feature_map(t, "nlc", num_prefix_tokens=3, grid_size=(2, 3), semantic=semantic)
    assert_map(fm, tokens_to_map(t, 3, (2, 3)), expected(t))


@settings(deadline=None, max_examples=25)
@given(
    batch=st.integers(1, 3),
    prefix=st.integers(0, 5),
    gh=st.integers(1, 5),
    gw=st.integers(1, 5),
    dim=st.integers(1, 4),
    give_grid=st.booleans(),
)
def test_nlc_property(batch: int, prefix: int, gh: int, gw: int, dim: int, give_grid: bool) -> None:
    t = torch.randn(batch, prefix + gh * gw, dim)
    square = gh == gw
    grid = (gh, gw) if give_grid or not square else None
    fm = to_feature_map(t, "nlc", num_prefix_tokens=prefix, grid_size=grid)
    assert fm.spatial.shape == (batch, dim, gh, gw)
    torch.testing.assert_close(fm.spatial, tokens_to_map(t, prefix, (gh, gw)))
    torch.testing.assert_close(fm.semantic, t[:, 0] if prefix else t.mean(dim=1))


def test_to_feature_map_keeps_gradients() -> None:
    t = torch.randn(2, 5, 3, requires_grad=True)
    fm = to_feature_map(t, "nlc", num_prefix_tokens=1, grid_size=(2, 2))
    (fm.spatial.sum() + 2 * fm.semantic.sum()).backward()
    expected = torch.ones(2, 5, 3)
    expected[:, 0] = 2
    torch.testing.assert_close(t.grad, expected)


@pytest.mark.parametrize(
    ("t", "kwargs", "error", "match"),
    [
        (torch.zeros(2, 10), {"layout": "nchw", "name": "fc"}, ValueError, r"'fc' has no spatial.*\(2, 10\)"),
        (torch.zeros(2, 10), {"layout": "nlc", "name": "head"}, ValueError, r"'head' has no spatial.*\(2, 10\)"),
        (
            torch.zeros(2, 1 + 6, 4),
            {"layout": "nlc", "num_prefix_tokens": 1, "name": "blocks.3"},
            ValueError,
            r"'blocks.3' has N=6 patch tokens.*not a perfect square; pass `grid_size`",
        ),
        (
            torch.zeros(2, 7, 4),
            {"layout": "nlc", "num_prefix_tokens": 1, "grid_size": (2, 2), "name": "b"},
            ValueError,
            r"`grid_size`=\(2, 2\) holds 4 positions but layer 'b' has N=6",
        ),
        (torch.zeros(2, 2, 4), {"layout": "nlc", "num_prefix_tokens": 2}, ValueError, "no patch tokens"),
        (torch.zeros(2, 3, 4), {"layout": "nchw", "name": "x1"}, ValueError, r"'x1' with layout 'nchw' must output"),
        (torch.zeros(2, 3, 4, 4), {"layout": "nlc"}, ValueError, r"layout 'nlc' must output a 3-D tensor"),
        (torch.zeros(2, 3, 4, 4), {"layout": "nchw", "semantic": "cls", "name": "m"}, ValueError, "'m' has none"),
        (torch.zeros(2, 3, 4, 4), {"layout": "NCHW"}, ValueError, "`layout` must be one of"),
        (torch.zeros(2, 3, 4, 4), {"layout": "nchw", "semantic": "max"}, ValueError, "`semantic` must be one of"),
        (torch.zeros(2, 5, 4), {"layout": "nlc", "num_prefix_tokens": -1}, ValueError, "num_prefix_tokens"),
        (torch.zeros(2, 5, 4), {"layout": "nlc", "grid_size": "2x2"}, TypeError, "grid_size"),
        ([1.0, 2.0], {"layout": "nchw", "name": "q"}, TypeError, "'q'.*must be a torch.Tensor"),
    ],
)
def test_to_feature_map_errors(t: Any, kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        to_feature_map(t, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# HookAdapter / CNNAdapter on plain modules


def test_hook_adapter_on_sequential_one_forward() -> None:
    net = small_sequential()
    adapter = HookAdapter(net, ["1", "3"])
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with captured(net, ["1", "3"]) as ref, call_count(net) as calls:
        out = adapter(x)
    assert calls[0] == 1
    assert isinstance(out, AdapterOutput) and isinstance(out.features, tuple)
    assert adapter.layer_names == ("1", "3")
    torch.testing.assert_close(out.logits, net(x))
    assert_map(out.features[0], ref["1"], ref["1"].mean(dim=(2, 3)))
    assert_map(out.features[1], ref["3"], ref["3"].mean(dim=(2, 3)))
    assert out.features[1].spatial.shape == (2, 6, 4, 4)
    out.features[0].semantic.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_hooks_exist_only_while_the_adapter_runs() -> None:
    net = small_sequential()
    adapter = HookAdapter(net, ["1", "3"])
    assert all_hooks(net) == 0
    adapter(torch.randn(1, 3, 8, 8))
    assert all_hooks(net) == 0
    with pytest.raises(ValueError, match="`x` has 5 channels"):
        adapter(torch.randn(1, 5, 8, 8))  # refused by the adapter before any hook is registered
    assert all_hooks(net) == 0

    class Fails(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            raise RuntimeError("fails inside the model")

    net[4] = Fails()  # after the tapped layers: the hooks are registered and have fired when the model fails
    with pytest.raises(RuntimeError, match="fails inside the model"):
        adapter(torch.randn(1, 3, 8, 8))
    assert all_hooks(net) == 0


def test_features_follow_the_given_order() -> None:
    net = small_sequential()
    out = HookAdapter(net, ["3", "0"])(torch.randn(1, 3, 8, 8))
    assert [f.spatial.shape[1] for f in out.features] == [6, 4]


def test_deepcopy_and_state_dict() -> None:
    net = small_sequential()
    adapter = HookAdapter(net, ["0"])
    assert list(adapter.state_dict()) == [f"model.{k}" for k in net.state_dict()]
    clone = copy.deepcopy(adapter)
    with torch.no_grad():
        clone.model[0].weight.mul_(2.0)
        clone.model[0].bias.zero_()
    x = torch.randn(2, 3, 8, 8)
    with captured(clone.model, ["0"]) as ref:
        out = clone(x)
    torch.testing.assert_close(out.features[0].spatial, ref["0"])
    original = adapter(x).features[0].spatial
    torch.testing.assert_close(out.features[0].spatial, 2 * (original - net[0].bias.view(1, -1, 1, 1)))
    fresh = HookAdapter(small_sequential(), ["0"])
    fresh.load_state_dict(clone.state_dict())
    torch.testing.assert_close(fresh(x).logits, out.logits)


def test_tuple_outputs_and_output_fn() -> None:
    torch.manual_seed(0)
    net = TupleNet()
    x = torch.randn(2, 3, 6, 6)
    with captured(net, ["block"]) as ref:
        out = HookAdapter(net, ["block"])(x)
    torch.testing.assert_close(out.features[0].spatial, ref["block"][0])
    torch.testing.assert_close(out.logits, net(x)[0])
    out2 = HookAdapter(net, ["block"], output_fn=lambda o: o[0] * 2)(x)
    torch.testing.assert_close(out2.logits, 2 * out.logits)


def test_default_output_fn() -> None:
    t = torch.randn(2, 3)

    class Out:
        logits = t

    assert default_output_fn(t) is t
    assert default_output_fn(Out()) is t
    assert default_output_fn({"logits": t}) is t
    assert default_output_fn([t, torch.zeros(1)]) is t
    with pytest.raises(TypeError, match="pass `output_fn`"):
        default_output_fn({"scores": t})


def test_module_called_twice_keeps_its_last_output() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv(self.conv(x)).mean(dim=(2, 3))

    net = Twice()
    x = torch.randn(1, 2, 3, 3)
    out = HookAdapter(net, ["conv"])(x)
    torch.testing.assert_close(out.features[0].spatial, net.conv(net.conv(x)))


def test_channels_last_features_are_permuted() -> None:
    torch.manual_seed(0)
    net = ChannelsLastNet()
    x = torch.randn(2, 3, 8, 8)
    with captured(net, ["mix"]) as ref:
        out = CNNAdapter(net, ["mix"], channels_last=True)(x)
    nhwc = ref["mix"]
    assert nhwc.shape == (2, 4, 4, 8)
    assert_map(out.features[0], nhwc.permute(0, 3, 1, 2), nhwc.mean(dim=(1, 2)))
    torch.testing.assert_close(out.logits, net(x))
    # the same layer through HookAdapter with an explicit layout
    out2 = HookAdapter(net, ["mix"], layout="nhwc")(x)
    torch.testing.assert_close(out2.features[0].spatial, nhwc.permute(0, 3, 1, 2))


def test_cnn_adapter_on_convnet_defaults_to_pool_outputs() -> None:
    torch.manual_seed(0)
    net = ConvNet(width=8)
    adapter = CNNAdapter(net)
    assert adapter.layer_names == net.feature_layers
    x = torch.randn(2, 3, 32, 32)
    with captured(net, net.feature_layers) as ref, call_count(net) as calls:
        out = adapter(x)
    assert calls[0] == 1
    torch.testing.assert_close(out.logits, net(x))
    for fm, name, side in zip(out.features, net.feature_layers, (16, 8, 4), strict=True):
        assert fm.spatial.shape == (2, 8, side, side)
        assert_map(fm, ref[name], ref[name].mean(dim=(2, 3)))


def test_vit_adapter_on_timm_vit_by_hooks() -> None:
    vit = timm_vit()
    names = [f"blocks.{i}" for i in range(len(vit.blocks))]
    adapter = ViTAdapter(vit, names)
    assert adapter.num_prefix_tokens == 1
    x = torch.randn(2, 3, 32, 32)
    with captured(vit, names) as ref:
        out = adapter(x)
    for fm, name in zip(out.features, names, strict=True):
        assert_map(fm, tokens_to_map(ref[name], 1, (8, 8)), ref[name][:, 0])


def test_vit_adapter_registers_and_non_square_grid() -> None:
    vit = reg_vit(img_size=(32, 48))
    x = torch.randn(2, 3, 32, 48)
    names = ["blocks.0", "blocks.1"]
    with captured(vit, names) as ref:
        out = ViTAdapter(vit, names, grid_size=(8, 12), semantic="prefix_mean")(x)
    for fm, name in zip(out.features, names, strict=True):
        assert_map(fm, tokens_to_map(ref[name], 5, (8, 12)), ref[name][:, :5].mean(dim=1))
    with pytest.raises(ValueError, match=r"'blocks.0' has N=96 patch tokens.*pass `grid_size`"):
        ViTAdapter(vit, names)(x)


# ----------------------------------------------------------------------------------------------------------------
# input_size, feature_specs


def test_input_size_resizes_like_interpolate_align_corners() -> None:
    net = small_sequential()
    adapter = HookAdapter(net, ["0"], input_size=(12, 10))
    x = torch.randn(2, 3, 8, 8)
    resized = F.interpolate(x, size=(12, 10), mode="bilinear", align_corners=True)
    seen = []
    handle = net.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    out = adapter(x)
    handle.remove()
    torch.testing.assert_close(seen[0], resized)
    torch.testing.assert_close(out.features[0].spatial, net[0](resized))
    torch.testing.assert_close(out.logits, net(resized))
    assert adapter.feature_specs(8) == (FeatureSpec("0", 4, 12, 10),)


def test_input_size_of_same_size_is_not_resampled() -> None:
    net = small_sequential()
    x = torch.randn(1, 3, 8, 8)
    seen = []
    handle = net.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    HookAdapter(net, ["0"], input_size=8)(x)
    handle.remove()
    assert seen[0] is x


def test_feature_specs_probe_keeps_batchnorm_state_and_modes() -> None:
    torch.manual_seed(0)
    net = ConvNet(width=4, norm="batch")
    net(torch.randn(4, 3, 32, 32))  # non-trivial running statistics
    net.features[1].eval()  # a mixed-mode model: the probe must restore each submodule's own mode
    state = {k: v.clone() for k, v in net.state_dict().items()}
    adapter = CNNAdapter(net)
    with call_count(net) as calls:
        specs = adapter.feature_specs(32)
        again = adapter.feature_specs((32, 32))
    assert calls[0] == 1  # probed once, then cached
    assert again == specs == tuple(FeatureSpec(f"features.{k}.pool", 4, s, s) for k, s in enumerate((16, 8, 4)))
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert net.training and adapter.training
    assert net.features[0].training and not net.features[1].training and net.features[2].training
    assert not net.features[1].norm.training


def test_feature_specs_single_channel_model_and_new_size() -> None:
    adapter = CNNAdapter(ConvNet(in_channels=1, width=4, depth=2, image_size=28))
    assert adapter.feature_specs(28) == (
        FeatureSpec("features.0.pool", 4, 14, 14),
        FeatureSpec("features.1.pool", 4, 7, 7),
    )
    net = small_sequential()
    adapter2 = HookAdapter(net, ["3"])
    assert adapter2.feature_specs(8)[0] == FeatureSpec("3", 6, 4, 4)
    assert adapter2.feature_specs((12, 16))[0] == FeatureSpec("3", 6, 6, 8)


@pytest.mark.parametrize(
    ("size", "error", "match"),
    [(0, ValueError, "image_size"), ("32", TypeError, "image_size"), ((32, 32, 3), ValueError, "image_size")],
)
def test_feature_specs_bad_size(size: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        HookAdapter(small_sequential(), ["0"]).feature_specs(size)


# ----------------------------------------------------------------------------------------------------------------
# timm


def test_timm_vit_matches_block_outputs_and_logits() -> None:
    vit = timm_vit().eval()
    adapter = TimmAdapter(vit)
    names = [f"blocks.{i}" for i in range(6)]
    assert adapter.layer_names == tuple(names)
    x = torch.randn(2, 3, 32, 32)
    with captured(vit, names) as ref, call_count(vit.patch_embed) as embeds, call_count(vit.blocks[0]) as firsts:
        out = adapter(x)
    assert embeds[0] == 1 and firsts[0] == 1
    torch.testing.assert_close(out.logits, vit(x))
    for fm, name in zip(out.features, names, strict=True):
        assert_map(fm, tokens_to_map(ref[name], 1, (8, 8)), ref[name][:, 0])
    assert adapter.feature_specs(32) == tuple(FeatureSpec(n, 64, 8, 8) for n in names)


def test_timm_vit_gradients_reach_input_and_parameters() -> None:
    vit = reg_vit()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = TimmAdapter(vit, indices=[0])(x)
    (out.logits.sum() + out.features[0].spatial.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert vit.blocks[0].mlp.fc1.weight.grad is not None and vit.head.weight.grad is not None


@pytest.mark.parametrize(
    ("semantic", "expected"),
    [
        ("auto", lambda t: t[:, 0]),
        ("cls", lambda t: t[:, 0]),
        ("prefix_mean", lambda t: t[:, :5].mean(dim=1)),
        ("mean", lambda t: t[:, 5:].mean(dim=1)),
    ],
)
def test_timm_vit_with_registers_semantic_variants(semantic: str, expected: Any) -> None:
    vit = reg_vit().eval()
    assert vit.num_prefix_tokens == 5
    adapter = TimmAdapter(vit, semantic=semantic)
    x = torch.randn(2, 3, 32, 32)
    with captured(vit, ["blocks.0", "blocks.1"]) as ref:
        out = adapter(x)
    torch.testing.assert_close(out.logits, vit(x))
    for fm, name in zip(out.features, ("blocks.0", "blocks.1"), strict=True):
        assert_map(fm, tokens_to_map(ref[name], 5, (8, 8)), expected(ref[name]))


def test_timm_vit_non_square_grid() -> None:
    vit = reg_vit(img_size=(32, 48)).eval()
    x = torch.randn(2, 3, 32, 48)
    with captured(vit, ["blocks.1"]) as ref:
        out = TimmAdapter(vit, indices=[-1])(x)
    assert out.features[0].spatial.shape == (2, 32, 8, 12)
    assert_map(out.features[0], tokens_to_map(ref["blocks.1"], 5, (8, 12)), ref["blocks.1"][:, 0])
    assert TimmAdapter(vit).feature_specs((32, 48)) == (
        FeatureSpec("blocks.0", 32, 8, 12),
        FeatureSpec("blocks.1", 32, 8, 12),
    )


def test_timm_vit_without_prefix_tokens() -> None:
    torch.manual_seed(0)
    vit = TimmViT(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, class_token=False, global_pool="avg")
    x = torch.randn(2, 3, 16, 16)
    with captured(vit, ["blocks.0"]) as ref:
        out = TimmAdapter(vit)(x)
    assert_map(out.features[0], tokens_to_map(ref["blocks.0"], 0, (4, 4)), ref["blocks.0"].mean(dim=1))
    with pytest.raises(ValueError, match=r"`semantic`='cls' needs prefix tokens but VisionTransformer has none"):
        TimmAdapter(vit, semantic="cls")


@pytest.mark.parametrize("name", ["test_resnet", "test_convnext"])
def test_timm_cnn_matches_feature_info_modules(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    adapter = TimmAdapter(model)
    modules = [info["module"] for info in model.feature_info]
    assert adapter.layer_names == tuple(modules)
    x = torch.randn(2, 3, 64, 64)
    with captured(model, modules) as ref, call_count(model.stem if name == "test_convnext" else model.conv1) as stems:
        out = adapter(x)
    assert stems[0] == 1
    torch.testing.assert_close(out.logits, model(x))
    for fm, module, info in zip(out.features, modules, model.feature_info, strict=True):
        assert fm.spatial.shape[1] == info["num_chs"]
        assert fm.spatial.shape[-1] == 64 // info["reduction"]
        assert_map(fm, ref[module], ref[module].mean(dim=(2, 3)))


def test_timm_indices_follow_timm_convention() -> None:
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    assert TimmAdapter(model, indices=2).layer_names == ("layer3", "layer4")
    assert TimmAdapter(model, indices=[3, -5, 1]).layer_names == ("act1", "layer1", "layer3")
    out = TimmAdapter(model, indices=[4, 1])(torch.randn(1, 3, 64, 64))
    assert [f.spatial.shape[1] for f in out.features] == [32, 96]


class _ChannelsLastTimmStub(nn.Module):
    """Mimics a timm model whose intermediates come back NHWC despite output_fmt='NCHW'."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, 2)
        self.feature_info = [{"module": "conv", "num_chs": 5, "reduction": 2}]

    def forward_intermediates(self, x: Tensor, indices: Any = None, output_fmt: str = "NCHW") -> Any:
        y = self.conv(x)
        return y, [y.permute(0, 2, 3, 1)]

    def forward_head(self, y: Tensor) -> Tensor:
        return self.fc(y.mean(dim=(2, 3)))


def test_timm_channels_last_intermediates_are_permuted() -> None:
    stub = _ChannelsLastTimmStub()
    x = torch.randn(2, 3, 8, 8)
    out = TimmAdapter(stub)(x)
    ref = stub.conv(x)
    assert_map(out.features[0], ref, ref.mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("indices", "error", "match"),
    [
        (0, ValueError, r"last n of 5 feature levels, got n=0"),
        (6, ValueError, r"last n of 5 feature levels, got n=6"),
        ([5], ValueError, r"`indices\[0\]` must be in \[-5, 5\)"),
        ([1, -4], ValueError, "must not select a feature level twice"),
        ([], ValueError, "at least one"),
        ("1", TypeError, "`indices` must be None, an int or a sequence"),
        ([1.0], TypeError, r"`indices\[0\]` must be an int"),
        (True, TypeError, "`indices`"),
    ],
)
def test_timm_bad_indices(indices: Any, error: type[Exception], match: str) -> None:
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    with pytest.raises(error, match=match):
        TimmAdapter(model, indices=indices)


def test_timm_adapter_rejects_non_timm_and_bad_semantic() -> None:
    with pytest.raises(TypeError, match="has no `forward_intermediates`"):
        TimmAdapter(small_sequential())
    with pytest.raises(ValueError, match="`semantic` must be one of"):
        TimmAdapter(timm_vit(), semantic="token")
    with pytest.raises(ValueError, match="needs prefix tokens but ResNet has none"):
        TimmAdapter(timm.create_model("test_resnet", num_classes=10), semantic="prefix_mean")


# ----------------------------------------------------------------------------------------------------------------
# torchvision


def test_torchvision_resnet18() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    adapter = TorchvisionAdapter(model)
    names = ["layer1", "layer2", "layer3", "layer4"]
    assert adapter.layer_names == tuple(names)
    x = torch.randn(2, 3, 32, 32)
    with captured(model, names) as ref, call_count(model) as calls:
        out = adapter(x)
    assert calls[0] == 1
    torch.testing.assert_close(out.logits, model(x))
    for fm, name, (c, s) in zip(out.features, names, [(64, 8), (128, 4), (256, 2), (512, 1)], strict=True):
        assert fm.spatial.shape == (2, c, s, s)
        assert_map(fm, ref[name], ref[name].mean(dim=(2, 3)))


def test_torchvision_vision_transformer() -> None:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    ).eval()
    adapter = TorchvisionAdapter(model)
    names = ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    assert adapter.layer_names == tuple(names)
    x = torch.randn(2, 3, 32, 32)
    with captured(model, names) as ref:
        out = adapter(x)
    torch.testing.assert_close(out.logits, model(x))
    for fm, name in zip(out.features, names, strict=True):
        assert_map(fm, tokens_to_map(ref[name], 1, (8, 8)), ref[name][:, 0])


def test_torchvision_swin_nhwc_stage_outputs() -> None:
    torch.manual_seed(0)
    model = torchvision.models.swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=[4, 4], num_classes=10
    ).eval()
    adapter = TorchvisionAdapter(model, input_size=32)
    assert adapter.layer_names == ("features.1", "features.3")
    x = torch.randn(2, 3, 32, 32)
    with captured(model, adapter.layer_names) as ref:
        out = adapter(x)
    torch.testing.assert_close(out.logits, model(x))
    for fm, name, side in zip(out.features, adapter.layer_names, (8, 4), strict=True):
        nhwc = ref[name]
        assert nhwc.shape[1:3] == (side, side)
        assert_map(fm, nhwc.permute(0, 3, 1, 2), nhwc.mean(dim=(1, 2)))


def test_torchvision_features_family_probe() -> None:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = TorchvisionAdapter(model)
    # the last block at each resolution (stride-2 blocks are features.1, .2, .4, .9), plus the last child
    assert adapter.layer_names == ("features.0", "features.1", "features.3", "features.8", "features.12")
    assert model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    out = adapter(torch.randn(2, 3, 64, 64))
    assert [f.spatial.shape[-1] for f in out.features] == [32, 16, 8, 4, 2]


def test_torchvision_unknown_family_needs_layers() -> None:
    model = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10)
    with pytest.raises(ValueError, match="`layers` is required: no default taps are known for ShuffleNetV2"):
        TorchvisionAdapter(model)
    adapter = TorchvisionAdapter(model, ["stage2", "stage4"])
    assert [f.spatial.shape[-1] for f in adapter(torch.randn(1, 3, 64, 64)).features] == [8, 2]


# ----------------------------------------------------------------------------------------------------------------
# auto_adapter


def test_auto_adapter_dispatch() -> None:
    convnet = ConvNet(width=4)
    assert type(auto_adapter(convnet)) is CNNAdapter
    assert type(auto_adapter(timm.create_model("test_resnet", num_classes=10))) is TimmAdapter
    tv = auto_adapter(torchvision.models.resnet18(weights=None, num_classes=10), input_size=40)
    assert type(tv) is TorchvisionAdapter and tv.input_size == (40, 40)
    adapter = HookAdapter(small_sequential(), ["0"])
    assert auto_adapter(adapter) is adapter
    assert isinstance(adapter, FeatureAdapter)


def test_auto_adapter_errors() -> None:
    with pytest.raises(TypeError, match=r"no adapter is known for Sequential.*HookAdapter\(model, layers="):
        auto_adapter(small_sequential())
    with pytest.raises(TypeError, match=r"`model` must be a torch\.nn\.Module, got str"):
        auto_adapter("resnet18")
    with pytest.raises(ValueError, match=r"already a HookAdapter; keyword arguments \['input_size'\]"):
        auto_adapter(HookAdapter(small_sequential(), ["0"]), input_size=32)


# ----------------------------------------------------------------------------------------------------------------
# constructor and input errors


def test_unknown_layer_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown submodule\(s\) \['layer9'\].*valid names: 'conv1', 'bn1'") as info:
        HookAdapter(torchvision.models.resnet18(weights=None), ["layer1", "layer9"])
    message = str(info.value)
    assert "did you mean 'layer4', 'layer3', 'layer2'?" in message
    assert message.split("valid names: ")[1].count("', '") == 19  # 20 names listed
    total = sum(1 for n, _ in torchvision.models.resnet18(weights=None).named_modules() if n)
    assert f"({total - 20} more, {total} in all)" in message


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": "0"}, TypeError, "`layers` must be a sequence of submodule names"),
        ({"layers": []}, ValueError, "`layers` must name at least one submodule"),
        ({"layers": ["0", "0"]}, ValueError, r"must not repeat a name, got \['0'\]"),
        ({"layers": ["0", 1]}, TypeError, r"`layers\[1\]` must be a submodule name"),
        ({"layers": ["0"], "layout": "chw"}, ValueError, "`layout` must be one of 'auto', 'nchw', 'nhwc', 'nlc'"),
        ({"layers": ["0"], "layout": "nchw", "semantic": "cls"}, ValueError, "`layout`='nchw' maps do not have"),
        ({"layers": ["0"], "semantic": "first"}, ValueError, "`semantic` must be one of"),
        ({"layers": ["0"], "num_prefix_tokens": -1}, ValueError, "`num_prefix_tokens` must be >= 0"),
        ({"layers": ["0"], "grid_size": (0, 4)}, ValueError, r"`grid_size\[0\]` must be >= 1"),
        ({"layers": ["0"], "input_size": 0}, ValueError, "`input_size` must be >= 1"),
        ({"layers": ["0"], "input_size": 3.5}, TypeError, "`input_size` must be an int or a"),
        ({"layers": ["0"], "output_fn": 3}, TypeError, "`output_fn` must be callable"),
    ],
)
def test_hook_adapter_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        HookAdapter(small_sequential(), **kwargs)


def test_adapter_rejects_non_module_and_missing_layers() -> None:
    with pytest.raises(TypeError, match=r"`model` must be a torch\.nn\.Module, got function"):
        HookAdapter(lambda x: x, ["0"])
    with pytest.raises(ValueError, match="`layers` is required: Sequential has no `feature_layers`"):
        CNNAdapter(small_sequential())
    with pytest.raises(TypeError, match="`channels_last` must be a bool"):
        CNNAdapter(ConvNet(width=4), channels_last="yes")
    with pytest.raises(TypeError, match="`num_prefix_tokens` must be an int"):
        ViTAdapter(timm_vit(), ["blocks.0"], num_prefix_tokens=1.0)


def test_layer_errors_at_run_time() -> None:
    net = small_sequential()
    with pytest.raises(ValueError, match=r"layer '6' has no spatial dimensions: its output has shape \(2, 7\)"):
        HookAdapter(net, ["6"])(torch.randn(2, 3, 8, 8))

    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Conv2d(3, 2, 1)
            self.unused = nn.Conv2d(3, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            return self.used(x).mean(dim=(2, 3))

    with pytest.raises(RuntimeError, match="layer 'unused' did not run during the forward pass of Skips"):
        HookAdapter(Skips(), ["used", "unused"])(torch.randn(1, 3, 4, 4))
    with pytest.raises(TypeError, match=r"layer 'block' returned dict"):
        HookAdapter(_DictBlockNet(), ["block"])(torch.randn(1, 3, 4, 4))


class _DictBlockNet(nn.Module):
    class Block(nn.Module):
        def forward(self, x: Tensor) -> dict[str, Tensor]:
            return {"y": x}

    def __init__(self) -> None:
        super().__init__()
        self.block = self.Block()

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)["y"].mean(dim=(2, 3))


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.zeros(3, 8, 8), ValueError, r"`x` must have 4 dimensions, got shape \(3, 8, 8\)"),
        (torch.zeros(0, 3, 8, 8), ValueError, r"`x` must hold at least one sample, got shape \(0, 3, 8, 8\)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), TypeError, "`x` must have a floating-point dtype"),
        ([[0.0]], TypeError, "`x` must be a torch.Tensor, got list"),
    ],
)
def test_bad_x(x: Any, error: type[Exception], match: str) -> None:
    net = small_sequential()
    with call_count(net) as calls, pytest.raises(error, match=match):
        HookAdapter(net, ["0"])(x)
    assert calls[0] == 0


# ----------------------------------------------------------------------------------------------------------------
# recognising models by what they expose; double backward; dtype and channel checks (issues 13 and 14)


class NamedLayersNet(nn.Module):
    """Not a ConvNet: offers only the named-layer protocol (``feature_layers``)."""

    feature_layers = ("body.0", "body.2")

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2, padding=1))
        self.head = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


class BlocksClsViT(nn.Module):
    """A ViT outside timm's interface: ``blocks`` and a ``cls_token``, NLC block outputs."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))
        self.head = nn.Linear(dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), t], dim=1)
        for block in self.blocks:
            t = t + block(t)
        return self.head(t[:, 0])


def test_auto_adapter_recognises_structures_not_classes() -> None:
    named = auto_adapter(NamedLayersNet())
    assert type(named) is CNNAdapter and named.layer_names == ("body.0", "body.2")
    vit = auto_adapter(BlocksClsViT())
    assert type(vit) is ViTAdapter and vit.layer_names == ("blocks.0", "blocks.1")
    assert vit(torch.randn(2, 3, 16, 16)).features[1].spatial.shape == (2, 8, 4, 4)
    tv_vit = auto_adapter(torchvision.models.VisionTransformer(32, 16, 2, 2, 8, 16, num_classes=3))
    assert type(tv_vit) is TorchvisionAdapter and len(tv_vit.layer_names) == 2
    import ast
    from pathlib import Path

    import hmdc_modules.adapters as adapters_package

    imported = set()
    for path in Path(adapters_package.__path__[0]).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    assert imported and not [
        name for name in imported if name.startswith(("timm", "torchvision", "hmdc_modules.condensation"))
    ]


def test_disable_fused_attention_counts_and_rejects_non_modules() -> None:
    vit = timm_vit()
    assert any(getattr(m, "fused_attn", False) for m in vit.modules())
    assert disable_fused_attention(vit) == len(vit.blocks)
    assert not any(getattr(m, "fused_attn", True) for m in vit.modules() if hasattr(m, "fused_attn"))
    assert disable_fused_attention(small_sequential()) == 0
    with pytest.raises(TypeError, match=r"`model` must be a torch\.nn\.Module, got str"):
        disable_fused_attention("vit")  # type: ignore[arg-type]


def _double_backward(model: nn.Module) -> Tensor:
    """Gradient matching's pattern: a loss of a create_graph gradient, back-propagated to the images."""
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    logits = out.logits if isinstance(out, AdapterOutput) else out
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([0, 1])), params, create_graph=True)
    sum(g.pow(2).sum() for g in grads).backward()
    assert x.grad is not None
    return x.grad


def test_timm_vit_from_create_model_works_in_a_double_backward_through_auto_adapter() -> None:
    torch.manual_seed(0)
    raw = timm.create_model("test_vit", num_classes=3, img_size=32, patch_size=4)
    with pytest.raises(RuntimeError, match="not implemented"):  # the failure auto_adapter prevents
        _double_backward(raw)
    grad = _double_backward(auto_adapter(raw))
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_adapter_reports_dtype_and_channel_mismatch_with_both_values() -> None:
    adapter = auto_adapter(ConvNet(width=4))
    with pytest.raises(TypeError, match=r"`x` has dtype torch\.float64 but ConvNet has torch\.float32 parameters"):
        adapter(torch.randn(1, 3, 32, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"`x` has 1 channels \(shape \(1, 1, 32, 32\)\) but ConvNet takes 3 input"):
        adapter(torch.randn(1, 1, 32, 32))
    half = auto_adapter(ConvNet(width=4)).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts float32 for the model: no complaint
        assert half(torch.randn(1, 3, 32, 32)).logits.dtype == torch.bfloat16
        with pytest.raises(TypeError, match=r"`x` has dtype torch\.float64 but ConvNet has torch\.bfloat16"):
            half(torch.randn(1, 3, 32, 32, dtype=torch.float64))  # autocast never casts float64
    assert adapter.double()(torch.randn(1, 3, 32, 32, dtype=torch.float64)).logits.dtype == torch.float64

"""create_model's attention switch and the one list of vision-transformer modules."""

from __future__ import annotations

import pytest
import torch

from hmdc_modules.condensation import VIT_MODULES, create_model, is_vision_transformer


def _fused_flags(model: torch.nn.Module) -> list[bool]:
    return [m.fused_attn for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]


def test_default_model_is_twice_differentiable_and_the_switch_keeps_fused_attention() -> None:
    matching = create_model("test_vit", 2, image_size=32, patch_size=8)
    flags = _fused_flags(matching)
    assert flags and not any(flags)  # explicit attention everywhere: double backward works
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    (g,) = torch.autograd.grad(matching(x).square().sum(), x, create_graph=True)
    g.sum().backward()  # a second derivative through attention
    assert x.grad is not None and torch.isfinite(x.grad).all()

    torch.manual_seed(0)
    fused = create_model("test_vit", 2, image_size=32, patch_size=8, double_backward=False)
    torch.manual_seed(0)
    explicit = create_model("test_vit", 2, image_size=32, patch_size=8)
    from timm.layers import use_fused_attn

    assert _fused_flags(fused) == [use_fused_attn()] * len(flags)  # as timm builds it
    y = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(fused.eval()(y), explicit.eval()(y), rtol=1e-5, atol=1e-5)  # the same function


def test_double_backward_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="`double_backward` must be a bool, got"):
        create_model("convnet", 2, double_backward="no")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vit_tiny_patch16_224", True),
        ("deit_tiny_patch16_224", True),
        ("resnet18", False),
        ("convnet", False),
        ("not_a_model", False),
    ],
)
def test_is_vision_transformer(name: str, expected: bool) -> None:
    assert is_vision_transformer(name) is expected
    assert "vision_transformer" in VIT_MODULES


def test_is_vision_transformer_names_the_argument() -> None:
    with pytest.raises(TypeError, match="`name` must be a model name string"):
        is_vision_transformer(3)  # type: ignore[arg-type]


def test_evaluation_builds_vits_with_timm_attention_kernels() -> None:
    from timm.layers import use_fused_attn

    from hmdc_modules.evaluation import ModelSpec

    model = ModelSpec("test_vit", image_size=32, patch_size=8).build(num_classes=3)
    flags = _fused_flags(model)
    assert flags and flags == [use_fused_attn()] * len(flags)  # first-order training: no switch, no flip back

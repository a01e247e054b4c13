"""fused_attention: fused kernels for the passes that differentiate once, the explicit path restored after."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from hmdc_modules import HMDCObjective, SpatialSemanticDecomposer, auto_adapter
from hmdc_modules.adapters.timm import disable_fused_attention, fused_attention
from hmdc_modules.condensation import ConvNet


def _vit(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=4).to(dtype)
    disable_fused_attention(vit)
    return vit


def _flags(model: torch.nn.Module) -> list[bool]:
    return [m.fused_attn for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]


def test_the_fused_kernel_runs_inside_and_the_explicit_path_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    vit, calls = _vit(), []
    kernel = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    x = torch.randn(2, 3, 32, 32)
    vit(x)
    assert calls == []
    with fused_attention(vit) as switched:
        vit(x)
    assert switched == len(_flags(vit)) > 0 and len(calls) == switched  # one call per attention block
    assert not any(_flags(vit))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_outputs_and_one_backward_agree_with_the_explicit_path(dtype: torch.dtype, tol: float) -> None:
    vit, x = _vit(dtype), torch.randn(4, 3, 32, 32, dtype=dtype)
    explicit = vit(x)
    explicit.square().sum().backward()
    grads = [p.grad.clone() for p in vit.parameters()]
    vit.zero_grad()
    with fused_attention(vit):
        fused = vit(x)
    fused.square().sum().backward()  # outside the context: the graph is already built
    torch.testing.assert_close(fused, explicit, atol=tol, rtol=tol)
    for p, g in zip(vit.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g, atol=10 * tol, rtol=10 * tol)


def test_flags_come_back_after_an_error_and_fused_modules_are_left_alone() -> None:
    vit = _vit()
    first = next(m for m in vit.modules() if isinstance(getattr(m, "fused_attn", None), bool))
    first.fused_attn = True  # already fused: not ours to switch back
    with pytest.raises(RuntimeError, match="boom"), fused_attention(vit, vit):  # reachable twice: switched once
        assert all(_flags(vit))
        raise RuntimeError("boom")
    assert first.fused_attn and not any(_flags(vit)[1:])


def test_objective_training_losses_match_and_matching_still_differentiates_twice() -> None:
    torch.manual_seed(0)
    adapters = [auto_adapter(ConvNet(num_classes=10, width=8)), auto_adapter(_vit())]
    objective = HMDCObjective(adapters, decomposer=SpatialSemanticDecomposer(adapters, image_size=32))
    x, t = torch.randn(6, 3, 32, 32), torch.randint(10, (6,))
    with torch.no_grad():  # the explicit path, written out
        outs = [a(x) for a in adapters]
        explicit = sum(F.cross_entropy(o.logits, t) for o in outs)
        explicit = explicit + objective.distillation(objective.decomposer([o.features for o in outs]))
        aligned = objective.distillation(objective.decomposer([o.features for o in outs]))
    loss = objective.training_loss(x, t)
    torch.testing.assert_close(loss.detach(), explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(objective.alignment_loss(x).detach(), aligned, atol=1e-5, rtol=1e-5)
    loss.backward()
    assert not any(_flags(adapters[1]))  # gradient matching (a double backward) needs the explicit path back
    syn = torch.randn(2, 3, 32, 32, requires_grad=True)
    objective.step(x, t, syn, t[:2], syn, group=0)
    assert syn.grad is not None and torch.isfinite(syn.grad).all()


def test_a_non_module_is_refused() -> None:
    with pytest.raises(TypeError, match="`modules` must be"), fused_attention("vit"):  # type: ignore[arg-type]
        pass

"""HMDCObjective: the per-class image objective composes the core modules exactly as written out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmdc_modules import (
    CNNAdapter,
    GradientBalancer,
    HeterogeneousGradientMatcher,
    MutualDistillationLoss,
    SpatialSemanticDecomposer,
    auto_adapter,
    soft_cross_entropy,
)
from hmdc_modules.condensation import ConvNet, create_model
from hmdc_modules.objective import HMDCObjective, NonFiniteLossError, hmdc_losses


def parts(seed: int = 0):
    torch.manual_seed(seed)
    adapters = [
        CNNAdapter(ConvNet(num_classes=3, width=8)),
        auto_adapter(create_model("test_vit", 3, image_size=32, patch_size=8)),
    ]
    return adapters, SpatialSemanticDecomposer(adapters, image_size=32)


def batches(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    real_x = torch.randn(6, 3, 32, 32, generator=g)
    real_t = nn.functional.one_hot(torch.full((6,), 2), 3).float()
    images = torch.randn(2, 3, 32, 32, generator=g).requires_grad_(True)
    syn_t = nn.functional.one_hot(torch.full((2,), 2), 3).float()
    return real_x, real_t, images, syn_t


def by_hand(adapters, decomposer, real_x, real_t, syn_x, syn_t):
    """The image losses written out: one forward pass per model and batch, CE matching, matched distillation."""
    matcher = HeterogeneousGradientMatcher(adapters)
    distill = MutualDistillationLoss()
    out_r, out_s = [a(real_x) for a in adapters], [a(syn_x) for a in adapters]
    losses = list(
        matcher.match(
            [soft_cross_entropy(o.logits, real_t) for o in out_r], [soft_cross_entropy(o.logits, syn_t) for o in out_s]
        ).unbind()
    )
    md_r, md_s = distill(decomposer([o.features for o in out_r])), distill(decomposer([o.features for o in out_s]))
    return [*losses, matcher.match([md_r], [md_s], [matcher.all_parameters()])[0]]


@pytest.mark.parametrize("sample", [False, True], ids=["plain", "sampling"])
def test_step_equals_the_losses_and_balancer_backward_by_hand(sample: bool) -> None:
    adapters, decomposer = parts()
    real_x, real_t, images, syn_t = batches()
    expected_losses = by_hand(adapters, decomposer, real_x, real_t, images * 2.0, syn_t)
    reference = GradientBalancer(3, num_groups=2)
    reference.backward(expected_losses, images, group=1, sample=sample)
    expected_grad, images.grad = images.grad.clone(), None

    balancer = GradientBalancer(3, num_groups=2)
    objective = HMDCObjective(adapters, decomposer=decomposer, balancer=balancer, model_names=["a", "b"])
    result = objective.step(real_x, real_t, images * 2.0, syn_t, images, group=1, sample=sample)
    assert torch.equal(images.grad, expected_grad)  # bitwise: the same computation
    assert result.losses == tuple(float(x.detach()) for x in expected_losses)
    assert result.weights == tuple(reference.weights(1).tolist())
    assert torch.equal(balancer.accumulator, reference.accumulator)
    assert objective.loss_names == ("gm_a", "gm_b", "md")


def test_functional_form_and_weighted_total_match_the_class() -> None:
    adapters, decomposer = parts()
    real_x, real_t, images, syn_t = batches()
    objective = HMDCObjective(adapters, decomposer=decomposer)
    a = hmdc_losses(objective.matcher, real_x, real_t, images, syn_t, decomposer=decomposer)
    b = objective.losses(real_x, real_t, images, syn_t)
    assert [x.item() for x in a] == [x.item() for x in b]
    total = objective(real_x, real_t, images, syn_t)  # no balancer: weight one each
    assert total.item() == pytest.approx(sum(x.item() for x in b), rel=1e-6)
    assert objective.weights(0).tolist() == [1.0, 1.0, 1.0]


def test_without_balancer_only_the_images_get_a_gradient() -> None:
    adapters, decomposer = parts()
    real_x, real_t, images, syn_t = batches()
    objective = HMDCObjective(adapters, decomposer=decomposer)
    objective.step(real_x, real_t, images + 0.0, syn_t, images)
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for a in adapters for p in a.parameters())


def test_a_nan_loss_is_named_and_nothing_is_backpropagated() -> None:
    adapters, decomposer = parts()
    real_x, real_t, images, syn_t = batches()
    balancer = GradientBalancer(3, num_groups=1)
    objective = HMDCObjective(adapters, decomposer=decomposer, balancer=balancer, model_names=["a", "b"])
    computed = objective.losses

    def poisoned(*args):
        losses = computed(*args)
        return [losses[0], losses[1] * float("inf"), losses[2]]

    objective.losses = poisoned  # type: ignore[method-assign]
    with pytest.raises(NonFiniteLossError, match=r"loss 'gm_b' is inf \(group 0\)") as info:
        objective.step(real_x, real_t, images + 0.0, syn_t, images)
    assert info.value.loss_name == "gm_b" and info.value.group == 0
    assert images.grad is None and balancer.global_step == 0


def test_training_and_alignment_losses() -> None:
    adapters, decomposer = parts()
    real_x, real_t, _, _ = batches()
    objective = HMDCObjective(adapters, decomposer=decomposer)
    loss = objective.training_loss(real_x, real_t)
    outs = [a(real_x) for a in adapters]
    expected = sum(soft_cross_entropy(o.logits, real_t) for o in outs) + MutualDistillationLoss()(
        decomposer([o.features for o in outs])
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    align = objective.alignment_loss(real_x)
    align.backward()
    assert all(p.grad is None for a in adapters for p in a.parameters())  # the models are constants there
    assert any(p.grad is not None for p in decomposer.parameters())
    with pytest.raises(ValueError, match="needs a decomposer"):
        HMDCObjective(adapters).alignment_loss(real_x)


def test_bad_parts_are_refused_naming_the_argument() -> None:
    adapters, decomposer = parts()
    with pytest.raises(ValueError, match="`adapters` must hold at least one"):
        HMDCObjective([])
    with pytest.raises(TypeError, match=r"`adapters\[1\]`"):
        HMDCObjective([adapters[0], "vit"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="`adapters` must be a sequence"):
        HMDCObjective(adapters[0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`decomposer` aligns 2 models, but there are 1 adapters"):
        HMDCObjective(adapters[:1], decomposer=decomposer)
    with pytest.raises(TypeError, match="`decomposer`"):
        HMDCObjective(adapters, decomposer=MutualDistillationLoss())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`balancer` balances 2 losses, but the objective has 3"):
        HMDCObjective(adapters, decomposer=decomposer, balancer=GradientBalancer(2))
    with pytest.raises(TypeError, match="`balancer`"):
        HMDCObjective(adapters, balancer=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`model_names` must hold 2"):
        HMDCObjective(adapters, model_names=["a"])
    with pytest.raises(TypeError, match="`model_names`"):
        HMDCObjective(adapters, model_names="ab")
    with pytest.raises(TypeError, match="`matcher`"):
        hmdc_losses(adapters, *batches()[:2], *batches()[2:])  # type: ignore[arg-type]

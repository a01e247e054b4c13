"""CPU benchmarks of the public ``hmdc_modules`` modules, at small but realistic CIFAR-sized shapes.

Run with ``python -m pytest benchmarks/ --benchmark-only``. Every benchmark uses
``benchmark.pedantic(..., rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP_ROUNDS)``; where only part of a step
is of interest, the rest (e.g. building the loss graph) happens in the untimed ``setup`` of each round.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pytest_benchmark.fixture import BenchmarkFixture
from torch import Tensor, nn

from hmdc_modules import (
    FeatureAdapter,
    FeatureMap,
    GradientBalancer,
    HeterogeneousGradientMatcher,
    MutualDistillationLoss,
    SpatialSemanticDecomposer,
    auto_adapter,
)
from hmdc_modules.condensation import ConvNet, create_model

ROUNDS = 5
WARMUP_ROUNDS = 1
IMAGE_SIZE = 32
NUM_CLASSES = 10

SetupResult = tuple[tuple[Any, ...], dict[str, Any]]


def _pedantic(benchmark: BenchmarkFixture, target: Any, setup: Any = None) -> Any:
    """Run ``target`` with the suite's fixed round settings (``setup`` runs untimed before each round)."""
    return benchmark.pedantic(target, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP_ROUNDS)


# ------------------------------------------------------------------------------------------------ GradientBalancer


class _SmallConvNet(nn.Module):
    """A two-conv feature extractor with a linear head, standing in for the networks HMDC balances over."""

    def __init__(self, width: int = 16, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(features, logits)`` of ``x`` of shape $(B, 3, H, W)$."""
        feats = self.features(x)
        return feats, self.head(feats)


@pytest.mark.parametrize("sample", [True, False], ids=["sample", "plain"])
@pytest.mark.parametrize("mode", ["forward_backward", "balancer_backward"])
def test_gradient_balancer(benchmark: BenchmarkFixture, mode: str, sample: bool) -> None:
    """Balance 3 losses on synthetic images [4, 3, 32, 32]: ``forward(...).backward()`` or ``balancer.backward``.

    The losses (cross entropy, feature-mean matching against a fixed real batch, and a scaled total variation)
    are built through a small conv net in the untimed setup; the timed part is the balancer call plus the
    backward pass, with sampling forced on (one ``autograd.grad`` per loss) or off.
    """
    net = _SmallConvNet()
    synthetic = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, requires_grad=True)
    labels = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        real_mean = net(torch.randn(16, 3, IMAGE_SIZE, IMAGE_SIZE))[0].mean(0)
    balancer = GradientBalancer(num_losses=3, loss_names=["ce", "feature", "tv"])

    def setup() -> SetupResult:
        net.zero_grad(set_to_none=True)
        synthetic.grad = None
        feats, logits = net(synthetic)
        tv = (synthetic[..., 1:, :] - synthetic[..., :-1, :]).abs().mean() + (
            synthetic[..., 1:] - synthetic[..., :-1]
        ).abs().mean()
        losses = {
            "ce": F.cross_entropy(logits, labels),
            "feature": 1e3 * (feats.mean(0) - real_mean).pow(2).sum(),
            "tv": 1e-2 * tv,
        }
        return (losses,), {}

    def run(losses: dict[str, Tensor]) -> Tensor:
        if mode == "forward_backward":
            total = balancer(losses, synthetic, sample=sample)
            total.backward()
            return total.detach()
        return balancer.backward(losses, synthetic, sample=sample)

    total = _pedantic(benchmark, run, setup)
    assert torch.isfinite(total)
    assert synthetic.grad is not None


# ------------------------------------------------------------------------------------------------ SSD


def _ssd_setup() -> tuple[FeatureAdapter, FeatureAdapter, SpatialSemanticDecomposer]:
    """ConvNet (width 128) and timm ``test_vit`` (patch 4) adapters with their decomposer at 32x32."""
    cnn = auto_adapter(ConvNet(num_classes=NUM_CLASSES))
    vit = auto_adapter(create_model("test_vit", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, patch_size=4))
    decomposer = SpatialSemanticDecomposer([cnn, vit], image_size=IMAGE_SIZE)
    return cnn, vit, decomposer


def _alignment_loss(pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
    """A scalar of the aligned pairs so that the backward pass reaches every projection."""
    total = torch.zeros(())
    for a, b in pairs:
        total = total + (a - b).pow(2).mean()
    return total


def test_decomposer_align(benchmark: BenchmarkFixture) -> None:
    """Project and align precomputed ConvNet / test_vit features (batch 16), forward and backward.

    The adapters run once, untimed; their feature maps are detached and re-used, so the timed part is the
    decomposer alone: resize, per-layer projection, layer matching, and the backward into its parameters and the
    features.
    """
    cnn, vit, decomposer = _ssd_setup()
    images = torch.randn(16, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        outputs = [cnn(images), vit(images)]
    features = [
        [FeatureMap(fm.semantic.clone().requires_grad_(), fm.spatial.clone().requires_grad_()) for fm in out.features]
        for out in outputs
    ]

    def run() -> Tensor:
        decomposer.zero_grad(set_to_none=True)
        pairs = decomposer(features)
        loss = _alignment_loss(pairs)
        loss.backward()
        return loss.detach()

    loss = _pedantic(benchmark, run)
    assert torch.isfinite(loss)
    assert decomposer.dim == 64 and decomposer.side == 4


def test_decomposer_align_with_adapters(benchmark: BenchmarkFixture) -> None:
    """Both adapters' forward on images [16, 3, 32, 32], then decomposer alignment, forward and backward.

    Measures what one SSD step costs end to end through ``auto_adapter``: the two models' forward passes, the
    decomposer, and the backward pass into the images, the models and the decomposer.
    """
    cnn, vit, decomposer = _ssd_setup()
    images = torch.randn(16, 3, IMAGE_SIZE, IMAGE_SIZE, requires_grad=True)
    modules = (cnn, vit, decomposer)

    def run() -> Tensor:
        for module in modules:
            module.zero_grad(set_to_none=True)
        images.grad = None
        pairs = decomposer([cnn(images), vit(images)])
        loss = _alignment_loss(pairs)
        loss.backward()
        return loss.detach()

    loss = _pedantic(benchmark, run)
    assert torch.isfinite(loss)
    assert images.grad is not None


# ------------------------------------------------------------------------------------------------ MD loss


def test_mutual_distillation_loss(benchmark: BenchmarkFixture) -> None:
    """``MutualDistillationLoss`` (MSE, mean) on two aligned tensors [16, 3, 17, 64], forward and backward."""
    loss_fn = MutualDistillationLoss()
    a = torch.randn(16, 3, 17, 64, requires_grad=True)
    b = torch.randn(16, 3, 17, 64, requires_grad=True)

    def run() -> Tensor:
        a.grad = None
        b.grad = None
        loss = loss_fn(a, b)
        loss.backward()
        return loss.detach()

    loss = _pedantic(benchmark, run)
    assert torch.isfinite(loss)
    assert a.grad is not None and b.grad is not None


# ------------------------------------------------------------------------------------------------ gradient matching


@pytest.mark.parametrize("distance", ["sse", "dc", "mse", "cosine"])
def test_gradient_matcher(benchmark: BenchmarkFixture, distance: str) -> None:
    """Gradient matching on ConvNet(width=32): real batch 16, synthetic batch 4 of one class.

    Timed: the matcher's forward (two model forwards, the real and synthetic parameter gradients, the distance)
    and the ``.backward()`` of the distance into the synthetic images (autograd through autograd).
    """
    model = ConvNet(num_classes=NUM_CLASSES, width=32)
    matcher = HeterogeneousGradientMatcher([model], distance)
    real_x = torch.randn(16, 3, IMAGE_SIZE, IMAGE_SIZE)
    real_t = torch.zeros(16, dtype=torch.long)
    synthetic_x = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, requires_grad=True)
    synthetic_t = torch.zeros(4, dtype=torch.long)

    def run() -> Tensor:
        model.zero_grad(set_to_none=True)
        synthetic_x.grad = None
        distances = matcher(real_x, real_t, synthetic_x, synthetic_t)
        distances.sum().backward()
        return distances.detach()

    distances = _pedantic(benchmark, run)
    assert distances.shape == (1,)
    assert torch.isfinite(distances).all()
    assert synthetic_x.grad is not None

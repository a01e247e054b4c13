"""Mixed precision: bf16 autocast changes the arithmetic of the objective and nothing else (state stays float32)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmdc_modules import CNNAdapter, GradientBalancer, SpatialSemanticDecomposer, auto_adapter
from hmdc_modules.condensation import ConvNet, create_model
from hmdc_modules.condensation.precision import PRECISIONS, check_precision, precision_context
from hmdc_modules.objective import HMDCObjective, hmdc_losses


def objective(precision: str, balancer: GradientBalancer | None = None) -> HMDCObjective:
    torch.manual_seed(0)
    adapters = [
        CNNAdapter(ConvNet(num_classes=3, width=8)),
        auto_adapter(create_model("test_vit", 3, image_size=32, patch_size=8)),
    ]
    decomposer = SpatialSemanticDecomposer(adapters, image_size=32)
    return HMDCObjective(adapters, decomposer=decomposer, balancer=balancer, precision=precision)


def batches():
    g = torch.Generator().manual_seed(1)
    real_x = torch.randn(6, 3, 32, 32, generator=g)
    real_t = nn.functional.one_hot(torch.full((6,), 2), 3).float()
    images = torch.randn(2, 3, 32, 32, generator=g).requires_grad_(True)
    syn_t = nn.functional.one_hot(torch.full((2,), 2), 3).float()
    return real_x, real_t, images, syn_t


def test_context_per_precision() -> None:
    x = torch.randn(3, 4)
    with precision_context("fp32", "cpu"):
        assert (x @ x.T).dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    with precision_context("bf16", torch.device("cpu")):
        assert (x @ x.T).dtype == torch.bfloat16
    with precision_context("bf16", x):  # a tensor names its device
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    assert PRECISIONS == ("fp32", "bf16", "tf32") and check_precision("tf32") == "tf32"


@pytest.mark.parametrize(
    ("precision", "device", "error", "message"),
    [
        ("fp16", "cpu", ValueError, "`precision` must be one of 'fp32', 'bf16', 'tf32', got 'fp16'"),
        ("BF16", "cpu", ValueError, "`precision` must be one of 'fp32', 'bf16', 'tf32', got 'BF16'"),
        (16, "cpu", TypeError, "`precision` must be a string, one of 'fp32', 'bf16', 'tf32', got 16"),
        ("tf32", "cpu", ValueError, "`precision` 'tf32' needs a CUDA device, got 'cpu' (use 'fp32' or 'bf16')"),
        ("bf16", 3.5, TypeError, "`device` must be a torch.device, a device string or a tensor, got 3.5"),
    ],
)
def test_bad_precision_is_one_line(precision, device, error, message) -> None:
    with pytest.raises(error) as info:
        with precision_context(precision, device):
            pass
    assert str(info.value) == message


def test_objective_and_functional_refuse_a_bad_name() -> None:
    with pytest.raises(ValueError, match=r"^`precision` must be one of 'fp32', 'bf16', 'tf32', got 'float16'$"):
        objective("float16")
    nets = objective("fp32")
    real_x, real_t, images, syn_t = batches()
    with pytest.raises(ValueError, match=r"^`precision` must be one of .* got 'half'$"):
        hmdc_losses(nets.matcher, real_x, real_t, images, syn_t, precision="half")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 is a CUDA setting")
def test_tf32_is_restored_after_the_context() -> None:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with precision_context("tf32", "cuda"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_bf16_step_keeps_every_state_float32() -> None:
    """After a bf16 sampling step, an image update and a model-training step: balancer buffers, images, their
    gradient, the image optimiser's momentum, the parameters, their gradients and Adam's moments are float32."""
    balancer = GradientBalancer(3, num_groups=1, interval=1)
    nets = objective("bf16", balancer)
    real_x, real_t, images, syn_t = batches()
    image_optimizer = torch.optim.SGD([images], lr=0.1, momentum=0.5)
    result = nets.step(real_x, real_t, images * 1.0, syn_t, images, group=0, sample=True)
    assert balancer.num_samples.tolist() == [1] and all(w > 0 for w in result.weights)
    image_optimizer.step()
    assert balancer.accumulator.dtype == torch.float32
    assert images.dtype == images.grad.dtype == torch.float32
    assert image_optimizer.state[images]["momentum_buffer"].dtype == torch.float32
    assert torch.isfinite(images.grad).all() and images.grad.abs().max() > 0
    models = torch.optim.Adam(nets.parameters(), lr=1e-3)
    nets.training_loss(real_x, real_t).backward()
    models.step()
    params = [p for p in nets.parameters() if p.grad is not None]
    assert params and all(p.dtype == p.grad.dtype == torch.float32 for p in params)
    assert all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32 for s in models.state.values())
    alignment = nets.alignment_loss(real_x)
    assert alignment.dtype == torch.float32


def test_bf16_changes_the_arithmetic_but_stays_close() -> None:
    """bf16 really runs in bfloat16 (the gradient differs from fp32), and its image gradient points the same way."""
    grads, losses = {}, {}
    for precision in ("fp32", "bf16"):
        nets = objective(precision)
        real_x, real_t, images, syn_t = batches()
        losses[precision] = nets.losses(real_x, real_t, images * 1.0, syn_t)
        assert all(loss.dtype == torch.float32 for loss in losses[precision])
        nets.backward(losses[precision], images)
        grads[precision] = images.grad.flatten()
    assert not torch.equal(grads["fp32"], grads["bf16"])
    cosine = torch.nn.functional.cosine_similarity(grads["fp32"], grads["bf16"], dim=0)
    assert cosine > 0.9, float(cosine)
    for a, b in zip(losses["fp32"], losses["bf16"], strict=True):
        assert float(b.detach()) == pytest.approx(float(a.detach()), rel=0.2)

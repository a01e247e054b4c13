"""Distribution matching through heterogeneous models: mean_embedding_distance and HeterogeneousFeatureMatcher."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmdc_modules import GradientBalancer, SpatialSemanticDecomposer, auto_adapter
from hmdc_modules.condensation import create_model
from hmdc_modules.feature_matching import HeterogeneousFeatureMatcher, default_embedding
from hmdc_modules.functional.feature_matching import STATISTIC_DISTANCES, mean_embedding_distance


def test_distances_match_their_definitions() -> None:
    g = torch.Generator().manual_seed(0)
    real, syn = torch.randn(7, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g)
    diff = real.mean(0) - syn.mean(0)
    assert torch.allclose(mean_embedding_distance(real, syn), diff.pow(2).sum())
    assert torch.allclose(mean_embedding_distance(real, syn, "mse"), diff.pow(2).mean())
    a, b = real.mean(0).flatten(), syn.mean(0).flatten()
    cosine = 1 - torch.nn.functional.cosine_similarity(a, b, 0)
    assert torch.allclose(mean_embedding_distance(real, syn, "cosine"), cosine)
    for distance in STATISTIC_DISTANCES:  # equal means: zero distance, whatever the batch sizes
        same = torch.cat([syn, syn])
        assert mean_embedding_distance(same, syn, distance).abs().item() < 1e-6


def test_gradient_flows_to_the_synthetic_side_only() -> None:
    real = torch.randn(5, 4, requires_grad=True)
    syn = torch.randn(3, 4, requires_grad=True)
    mean_embedding_distance(real, syn).backward()
    assert real.grad is None
    expected = -2 * (real.mean(0) - syn.mean(0)).detach() / 3  # d/ds_i ||mu_r - mu_s||^2
    assert torch.allclose(syn.grad, expected.expand(3, 4))


@pytest.mark.parametrize(
    ("args", "kind", "name"),
    [
        ((torch.ones(2, 3), torch.ones(2, 3), "l2"), ValueError, "`distance`"),
        ((torch.ones(2, 3), torch.ones(2, 4)), ValueError, "same shape"),
        ((torch.ones(3), torch.ones(3)), ValueError, "`real`"),
        ((torch.ones(0, 3), torch.ones(2, 3)), ValueError, "`real`"),
        ((torch.ones(2, 3), torch.ones(2, 3, dtype=torch.long)), TypeError, "`synthetic`"),
        (([1.0], torch.ones(2, 3)), TypeError, "`real`"),
        ((torch.ones(2, 3), torch.full((2, 3), float("nan"))), ValueError, "`synthetic` is not finite"),
    ],
)
def test_bad_inputs_to_the_distance_name_the_argument(args, kind, name) -> None:
    with pytest.raises(kind, match=name):
        mean_embedding_distance(*args)


def test_negative_eps_is_refused() -> None:
    with pytest.raises(ValueError, match="`eps`"):
        mean_embedding_distance(torch.ones(2, 3), torch.ones(2, 3), "cosine", eps=-1.0)


def test_matcher_equals_the_functional_form_per_model() -> None:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    b = nn.Sequential(nn.Flatten(), nn.Linear(48, 6))
    real, syn = torch.randn(6, 3, 4, 4), torch.randn(2, 3, 4, 4, requires_grad=True)
    out = HeterogeneousFeatureMatcher([a, b], "mse")(real, syn)
    expected = torch.stack([mean_embedding_distance(m(real), m(syn), "mse") for m in (a, b)])
    assert out.shape == (2,) and torch.allclose(out, expected)


def test_with_a_decomposer_the_shared_term_is_added_and_reaches_the_images() -> None:
    torch.manual_seed(0)
    cnn = auto_adapter(create_model("convnet", 10, image_size=32))
    vit = auto_adapter(create_model("test_vit", 10, image_size=32, patch_size=4))
    decomposer = SpatialSemanticDecomposer([cnn, vit], image_size=32)
    matcher = HeterogeneousFeatureMatcher([cnn, vit], decomposer=decomposer)
    assert matcher.num_losses == 3
    real, syn = torch.randn(6, 3, 32, 32), torch.randn(2, 3, 32, 32, requires_grad=True)
    losses = matcher(real, syn)
    assert losses.shape == (3,) and torch.isfinite(losses).all() and (losses > 0).all()
    # the shared term is the mse of the mean aligned tokens of both models
    with torch.no_grad():
        [(ri, rj)] = decomposer([cnn(real).features, vit(real).features])
        [(si, sj)] = decomposer([cnn(syn).features, vit(syn).features])
    expected = (torch.cat([ri, rj], 1).mean(0) - torch.cat([si, sj], 1).mean(0)).pow(2).mean()
    assert torch.allclose(losses[2], expected, rtol=1e-5)
    # each term reaches the images; the balancer weighs them there
    balancer = GradientBalancer(3, loss_names=["dm_a", "dm_b", "md"])
    balancer.backward(list(losses), syn)
    assert syn.grad is not None and torch.isfinite(syn.grad).all() and syn.grad.abs().sum() > 0
    assert balancer.weights(0).max().item() == 1.0
    assert default_embedding(0, cnn(real)).shape == (6, cnn(real).features[-1].semantic.shape[1])


def test_real_batch_builds_no_graph() -> None:
    net = nn.Linear(4, 3)
    matcher = HeterogeneousFeatureMatcher([net])
    syn = torch.randn(2, 4)  # no grad at all: the distance has no graph, parameters only through syn
    loss = matcher(torch.randn(5, 4), syn)[0]
    loss.backward()
    # d/dW of ||W(mu_r - mu_s)||^2 uses only the synthetic side: the real mean is a constant
    assert net.weight.grad is not None


@pytest.mark.parametrize(
    ("build", "kind", "name"),
    [
        (lambda: HeterogeneousFeatureMatcher(nn.Linear(2, 2)), TypeError, "`models`"),
        (lambda: HeterogeneousFeatureMatcher([]), ValueError, "`models`"),
        (lambda: HeterogeneousFeatureMatcher([nn.Linear(2, 2), 3]), TypeError, r"`models\[1\]`"),
        (lambda: HeterogeneousFeatureMatcher([nn.Linear(2, 2)], "dc"), ValueError, "`distance`"),
        (lambda: HeterogeneousFeatureMatcher([nn.Linear(2, 2)], shared_distance="l1"), ValueError, "`shared_distance`"),
        (lambda: HeterogeneousFeatureMatcher([nn.Linear(2, 2)], embedding=3), TypeError, "`embedding`"),
        (lambda: HeterogeneousFeatureMatcher([nn.Linear(2, 2)], decomposer=nn.Linear(2, 2)), TypeError, "`decomposer`"),
    ],
)
def test_bad_construction_names_the_argument(build, kind, name) -> None:
    with pytest.raises(kind, match=name):
        build()


def test_decomposer_for_other_models_is_refused() -> None:
    from hmdc_modules.features import FeatureSpec

    decomposer = SpatialSemanticDecomposer([[FeatureSpec("a", 4, 2, 2)], [FeatureSpec("b", 4, 2, 2)]])
    with pytest.raises(ValueError, match="`decomposer` was built for 2 models"):
        HeterogeneousFeatureMatcher([nn.Linear(2, 2)], decomposer=decomposer)


def test_bad_forward_inputs_name_the_argument() -> None:
    matcher = HeterogeneousFeatureMatcher([nn.Linear(4, 3)])
    with pytest.raises(TypeError, match="`real_x`"):
        matcher([1.0], torch.randn(2, 4))

    class Picky(nn.Module):  # an adapter refuses a bad input with a ValueError
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[1] != 4:
                raise ValueError(f"expected 4 features, got {x.shape[1]}")
            return x

    with pytest.raises(ValueError, match=r"`synthetic_x` does not suit `models\[0\]` \(Picky\): expected 4"):
        HeterogeneousFeatureMatcher([Picky()])(torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(TypeError, match="AdapterOutput or a tensor"):
        HeterogeneousFeatureMatcher([nn.ModuleDict()], embedding=None).embedding(0, {"x": 1})

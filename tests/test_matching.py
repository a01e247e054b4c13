"""Tests for hmdc_modules.functional.matching and hmdc_modules.matching."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from hmdc_modules.features import AdapterOutput
from hmdc_modules.functional.matching import gradient_distance, match_gradients, soft_cross_entropy
from hmdc_modules.matching import HeterogeneousGradientMatcher

DISTANCES = ("sse", "mse", "cosine", "dc")
EPS = 1e-6
FAST = settings(deadline=None, max_examples=20)


# ----------------------------------------------------------------------------------------------------------------
# Two small heterogeneous models


class TinyConv(nn.Module):
    """Conv -> GroupNorm -> tanh -> 2x2 average pool -> linear; returns plain logits."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4 * 2 * 2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.norm(self.conv(x)))
        return self.head(F.adaptive_avg_pool2d(h, 2).flatten(1))


class TinyTokens(nn.Module):
    """4x4 patches -> tokens with a CLS token -> one attention block -> head on CLS; returns an AdapterOutput.

    Holds an ``unused`` layer that no forward reaches (matching must skip it).
    """

    def __init__(self, num_classes: int = 3, dim: int = 6) -> None:
        super().__init__()
        self.dim = dim
        self.embed = nn.Linear(3 * 4 * 4, dim)
        self.cls_token = nn.Parameter(0.1 * torch.randn(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, num_classes)
        self.unused = nn.Linear(2, 2)

    def forward(self, x: Tensor) -> AdapterOutput:
        tokens = self.embed(F.unfold(x, 4, stride=4).transpose(1, 2))
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        q, k, v = self.qkv(self.norm(tokens)).chunk(3, dim=-1)
        attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.dim), dim=-1)
        tokens = tokens + self.proj(attention @ v)
        return AdapterOutput(self.head(tokens[:, 0]), ())


def make_models(seed: int = 0, dtype: torch.dtype = torch.float64) -> list[nn.Module]:
    torch.manual_seed(seed)
    return [TinyConv().to(dtype), TinyTokens().to(dtype)]


def logits_of(output: Tensor | AdapterOutput) -> Tensor:
    return output if isinstance(output, Tensor) else output.logits


# ----------------------------------------------------------------------------------------------------------------
# Slow, obviously correct reference


def reference_grads(loss: Tensor, params: Sequence[Tensor], create_graph: bool) -> list[Tensor | None]:
    """Gradient of ``loss`` w.r.t. each parameter, one autograd call per parameter."""
    grads = []
    for p in params:
        (g,) = torch.autograd.grad(loss, [p], retain_graph=True, create_graph=create_graph, allow_unused=True)
        grads.append(g)
    return grads


def reference_distance(real: Sequence[Tensor], syn: Sequence[Tensor], distance: str) -> Tensor:
    """Distances written with explicit loops over parameters and output channels."""
    if distance in ("sse", "mse"):
        total = torch.zeros((), dtype=syn[0].dtype)
        count = 0
        for a, b in zip(real, syn, strict=True):
            total = total + ((a - b) ** 2).sum()
            count += a.numel()
        return total / count if distance == "mse" else total
    if distance == "cosine":
        dot = sum((a * b).sum() for a, b in zip(real, syn, strict=True))
        norm_a = torch.sqrt(sum((a * a).sum() for a in real))
        norm_b = torch.sqrt(sum((b * b).sum() for b in syn))
        return 1 - dot / (norm_a * norm_b + EPS)
    total = torch.zeros((), dtype=syn[0].dtype)
    for a, b in zip(real, syn, strict=True):
        if a.ndim < 2:  # biases and norm affine parameters are ignored by DC
            continue
        for o in range(a.shape[0]):
            row_a, row_b = a[o].flatten(), b[o].flatten()
            total = total + 1 - (row_a * row_b).sum() / (row_a.norm() * row_b.norm() + EPS)
    return total


def reference_model_distance(
    model: nn.Module,
    params: Sequence[Tensor],
    real_x: Tensor,
    real_t: Tensor,
    syn_x: Tensor,
    syn_t: Tensor,
    distance: str,
) -> Tensor:
    real_loss = F.cross_entropy(logits_of(model(real_x)), real_t)
    syn_loss = F.cross_entropy(logits_of(model(syn_x)), syn_t)
    g_real = reference_grads(real_loss, params, create_graph=False)
    g_syn = reference_grads(syn_loss, params, create_graph=True)
    pairs = [(a.detach(), b) for a, b in zip(g_real, g_syn, strict=True) if a is not None or b is not None]
    return reference_distance([a for a, _ in pairs], [b for _, b in pairs], distance)


def class_batches(
    seed: int, num_classes: int = 3, n_real: int = 5, n_syn: int = 2, side: int = 8, soft: bool = False
) -> tuple[list[Tensor], list[Tensor], Tensor, list[Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    real = [torch.randn(n_real, 3, side, side, generator=gen, dtype=torch.float64) for _ in range(num_classes)]
    syn = torch.randn(num_classes, n_syn, 3, side, side, generator=gen, dtype=torch.float64, requires_grad=True)
    if soft:  # cutmix-like probabilities over the models' 3 classes
        targets = [
            torch.softmax(3 * torch.randn(n_real, 3, generator=gen, dtype=torch.float64), dim=1)
            for _ in range(num_classes)
        ]
    else:
        targets = [torch.full((n_real,), c) for c in range(num_classes)]
    syn_targets = [torch.full((n_syn,), c) for c in range(num_classes)]
    return real, targets, syn, syn_targets


# ----------------------------------------------------------------------------------------------------------------
# soft_cross_entropy


@FAST
@given(
    batch=st.integers(1, 5),
    classes=st.integers(1, 6),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    seed=st.integers(0, 10_000),
)
def test_soft_cross_entropy_matches_torch(batch: int, classes: int, reduction: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, classes, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    expected = F.cross_entropy(logits, labels, reduction=reduction)
    torch.testing.assert_close(soft_cross_entropy(logits, labels, reduction), expected)
    torch.testing.assert_close(soft_cross_entropy(logits, labels.int(), reduction), expected)
    one_hot = F.one_hot(labels, classes).double()
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot, reduction), expected)
    probs = torch.softmax(torch.randn(batch, classes, generator=gen, dtype=torch.float64), dim=1)
    torch.testing.assert_close(
        soft_cross_entropy(logits, probs, reduction), F.cross_entropy(logits, probs, reduction=reduction)
    )


def test_soft_cross_entropy_explicit_loop_and_dtype() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    target = torch.tensor([[0.7, 0.3, 0.0], [0.1, 0.1, 0.8]], dtype=torch.float64)  # cast to logits' dtype
    out = soft_cross_entropy(logits, target, "none")
    assert out.dtype == torch.float32
    for i in range(2):
        expected = 0.0
        log_z = math.log(sum(math.exp(v) for v in logits[i].tolist()))
        for k in range(3):
            expected -= target[i, k].item() * (logits[i, k].item() - log_z)
        assert out[i].item() == pytest.approx(expected, rel=1e-5)


def test_soft_cross_entropy_gradcheck() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.softmax(torch.randn(3, 4, generator=gen, dtype=torch.float64), 1).requires_grad_()
    labels = torch.tensor([0, 3, 1])
    assert torch.autograd.gradcheck(lambda z, t: soft_cross_entropy(z, t, "none"), (logits, target))
    assert torch.autograd.gradgradcheck(lambda z: soft_cross_entropy(z, labels), (logits,))
    assert torch.autograd.gradgradcheck(lambda z: soft_cross_entropy(z, target.detach()), (logits,))


@pytest.mark.parametrize(
    ("logits", "target", "error", "match"),
    [
        (torch.zeros(2, 3), torch.tensor([0, 1, 2]), ValueError, "target"),
        (torch.zeros(2, 3), torch.zeros(3, 3), ValueError, "target"),
        (torch.zeros(2, 3), torch.zeros(2, 4), ValueError, "target"),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), ValueError, "logits"),
        (torch.zeros(3), torch.tensor([0, 1, 2]), ValueError, "logits"),
        (torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 1]), TypeError, "logits"),
        (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), TypeError, "target"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), TypeError, "target"),
        (torch.zeros(2, 3), torch.tensor([0, 3]), ValueError, "target"),
        (torch.zeros(2, 3), torch.tensor([-1, 0]), ValueError, "target"),
        (torch.zeros(2, 3), [0, 1], TypeError, "target"),
    ],
)
def test_soft_cross_entropy_bad_input(logits: Tensor, target: Tensor, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        soft_cross_entropy(logits, target)


def test_soft_cross_entropy_bad_reduction() -> None:
    with pytest.raises(ValueError, match="reduction"):
        soft_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), reduction="avg")


# ----------------------------------------------------------------------------------------------------------------
# gradient_distance


def random_grads(seed: int, shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


SHAPES = st.lists(
    st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple),
    min_size=1,
    max_size=4,
)


@FAST
@given(shapes=SHAPES, seed=st.integers(0, 10_000), distance=st.sampled_from(DISTANCES))
def test_gradient_distance_matches_reference(shapes: list[tuple[int, ...]], seed: int, distance: str) -> None:
    a = random_grads(seed, shapes)
    b = random_grads(seed + 1, shapes)
    torch.testing.assert_close(gradient_distance(a, b, distance), reference_distance(a, b, distance))


@FAST
@given(shapes=SHAPES, seed=st.integers(0, 10_000))
def test_gradient_distance_identical_inputs(shapes: list[tuple[int, ...]], seed: int) -> None:
    a = random_grads(seed, shapes)
    assert gradient_distance(a, a, "sse").item() == 0.0
    assert gradient_distance(a, a, "mse").item() == 0.0
    assert gradient_distance(a, a, "cosine", eps=0.0).item() == pytest.approx(0.0, abs=1e-12)
    assert gradient_distance(a, a, "dc", eps=0.0).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_distance_known_values() -> None:
    a = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([5.0])]
    b = [torch.tensor([[0.0, 1.0], [0.0, 2.0]]), torch.tensor([1.0])]
    assert gradient_distance(a, b, "sse").item() == pytest.approx(1 + 1 + 1 + 16)
    assert gradient_distance(a, b, "mse").item() == pytest.approx(19 / 5)
    # dc: row 0 orthogonal (1), row 1 parallel (0); the 1-D tensor contributes nothing
    assert gradient_distance(a, b, "dc", eps=0.0).item() == pytest.approx(1.0)
    cos = (2 + 5) / (math.sqrt(1 + 1 + 25) * math.sqrt(1 + 4 + 1))
    assert gradient_distance(a, b, "cosine", eps=0.0).item() == pytest.approx(1 - cos)
    only_biases = gradient_distance([torch.ones(3)], [torch.zeros(3)], "dc")
    assert only_biases.item() == 0.0


def test_gradient_distance_scale_invariance_of_cosines() -> None:
    a = random_grads(0, [(3, 2), (4,), (2, 2, 2)])
    b = random_grads(1, [(3, 2), (4,), (2, 2, 2)])
    for distance in ("cosine", "dc"):
        scaled = [7.0 * t for t in b]
        torch.testing.assert_close(
            gradient_distance(a, b, distance, eps=0.0), gradient_distance(a, scaled, distance, eps=0.0)
        )


@pytest.mark.parametrize("distance", DISTANCES)
def test_gradient_distance_gradcheck(distance: str) -> None:
    a = [t.requires_grad_() for t in random_grads(3, [(3, 2), (4,), (2, 2, 2)])]
    b = [t.requires_grad_() for t in random_grads(4, [(3, 2), (4,), (2, 2, 2)])]
    assert torch.autograd.gradcheck(lambda *ts: gradient_distance(ts[:3], ts[3:], distance), (*a, *b))


def test_gradient_distance_dtype_follows_input() -> None:
    a = [torch.ones(2, 2, dtype=torch.float64)]
    for distance in DISTANCES:
        assert gradient_distance(a, [torch.zeros(2, 2, dtype=torch.float64)], distance).dtype == torch.float64
        assert gradient_distance([a[0].float()], [torch.zeros(2, 2)], distance).dtype == torch.float32


def test_gradient_distance_bad_input() -> None:
    a = [torch.zeros(2, 2), torch.zeros(3)]
    with pytest.raises(ValueError, match="distance"):
        gradient_distance(a, a, "l1")
    with pytest.raises(ValueError, match="same number"):
        gradient_distance(a, a[:1])
    with pytest.raises(ValueError, match=r"real\[1\]"):
        gradient_distance(a, [torch.zeros(2, 2), torch.zeros(4)])
    with pytest.raises(ValueError, match="real"):
        gradient_distance([], [])
    with pytest.raises(TypeError, match="real"):
        gradient_distance(torch.zeros(2), [torch.zeros(2)])
    with pytest.raises(TypeError, match=r"synthetic\[0\]"):
        gradient_distance([torch.zeros(2)], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="eps"):
        gradient_distance(a, a, "dc", eps=-1.0)


# ----------------------------------------------------------------------------------------------------------------
# match_gradients


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


@pytest.mark.parametrize("distance", DISTANCES)
def test_match_gradients_gradcheck_wrt_synthetic_images_and_soft_labels(distance: str) -> None:
    net = mlp()
    params = list(net.parameters())
    gen = torch.Generator().manual_seed(1)
    real_x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    real_y = torch.tensor([0, 1, 1, 0, 1])
    syn_x = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    syn_t = torch.softmax(torch.randn(2, 2, generator=gen, dtype=torch.float64), 1).requires_grad_()

    def distance_of(x: Tensor, t: Tensor) -> Tensor:
        real_loss = soft_cross_entropy(net(real_x), real_y)
        return match_gradients(real_loss, soft_cross_entropy(net(x), t), params, distance)

    assert torch.autograd.gradcheck(distance_of, (syn_x, syn_t))


def test_match_gradients_gradgradcheck_sse() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2)).double()
    real_x = torch.randn(3, 2, dtype=torch.float64)
    real_y = torch.tensor([0, 1, 1])
    syn_x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)

    def distance_of(x: Tensor) -> Tensor:
        real_loss = soft_cross_entropy(net(real_x), real_y)
        return match_gradients(real_loss, soft_cross_entropy(net(x), real_y[:2]), list(net.parameters()))

    assert torch.autograd.gradgradcheck(distance_of, (syn_x,))


def test_match_gradients_real_side_is_constant_and_skips_unused() -> None:
    net = mlp()
    unused = nn.Parameter(torch.ones(3, dtype=torch.float64))
    real_x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    syn_x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1])
    real_loss = soft_cross_entropy(net(real_x), y)
    syn_loss = soft_cross_entropy(net(syn_x), y[:2])
    d = match_gradients(real_loss, syn_loss, [*net.parameters(), unused], "sse", retain_real_graph=True)
    expected = reference_distance(
        [g.detach() for g in reference_grads(real_loss, list(net.parameters()), False)],
        reference_grads(syn_loss, list(net.parameters()), True),
        "sse",
    )
    torch.testing.assert_close(d, expected)
    d.backward()
    assert real_x.grad is None
    assert syn_x.grad is not None and syn_x.grad.abs().sum() > 0
    assert unused.grad is None


def test_match_gradients_retain_real_graph() -> None:
    net = mlp()
    params = list(net.parameters())
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    real_loss = soft_cross_entropy(net(x), y)
    syn_x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    first = match_gradients(real_loss, soft_cross_entropy(net(syn_x), y[:2]), params, retain_real_graph=True)
    second = match_gradients(real_loss, soft_cross_entropy(net(syn_x), y[:2]), params, "dc")
    assert first.item() > 0 and second.item() > 0
    with pytest.raises(RuntimeError):  # the real graph was freed by the second call
        match_gradients(real_loss, soft_cross_entropy(net(syn_x), y[:2]), params)


def test_match_gradients_bad_input() -> None:
    net = mlp()
    params = list(net.parameters())
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])

    def loss() -> Tensor:
        return soft_cross_entropy(net(x), y)

    with pytest.raises(ValueError, match="distance"):
        match_gradients(loss(), loss(), params, "euclid")
    with pytest.raises(ValueError, match="real_loss"):
        match_gradients(soft_cross_entropy(net(x), y, "none"), loss(), params)
    with pytest.raises(ValueError, match="synthetic_loss"):
        match_gradients(loss(), soft_cross_entropy(net(x), y, "none"), params)
    with pytest.raises(ValueError, match="real_loss"):
        match_gradients(loss() * float("nan"), loss(), params)
    with pytest.raises(ValueError, match="synthetic_loss"):
        match_gradients(loss(), loss() * float("inf"), params)
    with pytest.raises(TypeError, match="real_loss"):
        match_gradients(1.0, loss(), params)
    with pytest.raises(ValueError, match="real_loss"):
        match_gradients(loss().detach(), loss(), params)
    with pytest.raises(ValueError, match="parameters"):
        match_gradients(loss(), loss(), [])
    with pytest.raises(ValueError, match=r"parameters\[0\]"):
        match_gradients(loss(), loss(), [torch.zeros(2)])
    extra = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"parameters\[4\].*synthetic_loss.*real_loss"):
        match_gradients(loss(), soft_cross_entropy(net(x) + extra, y), [*params, extra])
    with pytest.raises(ValueError, match="either loss"):
        match_gradients(loss(), loss(), [extra])


# ----------------------------------------------------------------------------------------------------------------
# HeterogeneousGradientMatcher


@pytest.mark.parametrize(
    ("distance", "soft"), [("sse", False), ("mse", False), ("cosine", False), ("dc", False), ("sse", True)]
)
def test_matcher_matches_slow_reference(distance: str, soft: bool) -> None:
    models = make_models()
    matcher = HeterogeneousGradientMatcher(models, distance)
    real, real_targets, syn, syn_targets = class_batches(seed=5, num_classes=2, soft=soft)

    total = torch.zeros((), dtype=torch.float64)
    reference_total = torch.zeros((), dtype=torch.float64)
    for c in range(len(real)):  # one class at a time, as in DC/HMDC
        out = matcher(real[c], real_targets[c], syn[c], syn_targets[c])
        assert out.shape == (2,)
        assert out.dtype == torch.float64
        for m, model in enumerate(models):
            expected = reference_model_distance(
                model, list(model.parameters()), real[c], real_targets[c], syn[c], syn_targets[c], distance
            )
            torch.testing.assert_close(out[m], expected)
            reference_total = reference_total + expected
        total = total + out.sum()
    (grad,) = torch.autograd.grad(total, syn)
    (expected_grad,) = torch.autograd.grad(reference_total, syn)
    torch.testing.assert_close(grad, expected_grad)
    assert grad.abs().sum() > 0


def expected_self_distance(model: nn.Module, x: Tensor, t: Tensor, distance: str) -> Tensor:
    """Distance of a batch's gradient with itself: zero for sse/mse, an eps-only term for cosine/dc."""
    loss = F.cross_entropy(logits_of(model(x)), t)
    grads = [g for g in reference_grads(loss, list(model.parameters()), False) if g is not None]
    return reference_distance(grads, grads, distance)


@settings(deadline=None, max_examples=12)
@given(
    batch=st.integers(1, 4),
    side=st.sampled_from([4, 8]),
    seed=st.integers(0, 10_000),
    distance=st.sampled_from(DISTANCES),
)
def test_matcher_identical_batches_give_zero(batch: int, side: int, seed: int, distance: str) -> None:
    models = make_models(seed % 7)
    matcher = HeterogeneousGradientMatcher(models, distance)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, side, side, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 3, (batch,), generator=gen)
    out = matcher(x, t, x.clone().requires_grad_(), t.clone())
    for m, model in enumerate(models):
        expected = expected_self_distance(model, x, t, distance)
        if distance in ("sse", "mse"):
            assert out[m].item() == pytest.approx(0.0, abs=1e-20)
        torch.testing.assert_close(out[m], expected, atol=1e-12, rtol=1e-9)
    if distance == "cosine":
        assert out.max().item() < 1e-2


def test_matcher_predicate_equals_explicit_lists() -> None:
    models = make_models()
    real, targets, syn, syn_targets = class_batches(seed=2, num_classes=1)

    def predicate(name: str, p: nn.Parameter) -> bool:
        return p.ndim >= 2 and not name.startswith("unused")

    explicit = [[p for n, p in model.named_parameters() if predicate(n, p)] for model in models]
    for distance in ("sse", "dc"):
        by_predicate = HeterogeneousGradientMatcher(models, distance, parameters=predicate)
        by_list = HeterogeneousGradientMatcher(models, distance, parameters=explicit)
        everything = HeterogeneousGradientMatcher(models, distance)
        for m in range(2):
            assert [id(p) for p in by_predicate.parameters_of(m)] == [id(p) for p in explicit[m]]
        a = by_predicate(real[0], targets[0], syn[0], syn_targets[0])
        b = by_list(real[0], targets[0], syn[0], syn_targets[0])
        torch.testing.assert_close(a, b)
        for m, model in enumerate(models):
            expected = reference_model_distance(
                model, explicit[m], real[0], targets[0], syn[0], syn_targets[0], distance
            )
            torch.testing.assert_close(a[m], expected)
        full = everything(real[0], targets[0], syn[0], syn_targets[0])
        if distance == "sse":  # dropping parameters removes non-negative terms
            assert bool((full >= a).all()) and bool((full > a).all())
        else:  # the predicate keeps every tensor with >= 2 dims, the only ones "dc" looks at
            torch.testing.assert_close(full, a)


def test_matcher_parameter_selection_follows_freezing() -> None:
    models = make_models()
    matcher = HeterogeneousGradientMatcher(models)
    before = len(matcher.parameters_of(0))
    models[0].head.weight.requires_grad_(False)
    assert len(matcher.parameters_of(0)) == before - 1
    assert len(matcher.all_parameters()) == len(matcher.parameters_of(0)) + len(matcher.parameters_of(1))
    assert matcher.parameters_of(-1) == matcher.parameters_of(1)


def test_matcher_match_joint_loss_equals_sum_of_per_model_sse() -> None:
    models = make_models()
    matcher = HeterogeneousGradientMatcher(models, "sse")
    real, targets, syn, syn_targets = class_batches(seed=9, num_classes=1)
    real_x, real_t, syn_x, syn_t = real[0], targets[0], syn[0], syn_targets[0]
    per_model = matcher(real_x, real_t, syn_x, syn_t)

    real_out = [logits_of(m(real_x)) for m in models]
    syn_out = [logits_of(m(syn_x)) for m in models]
    ce_real = [F.cross_entropy(z, real_t) for z in real_out]
    ce_syn = [F.cross_entropy(z, syn_t) for z in syn_out]
    # default parameters: pair k uses model k's parameters, same as forward
    torch.testing.assert_close(matcher.match(ce_real, ce_syn), per_model)
    # a loss that is a sum over the two models: matched over all parameters, it is the sum of the per-model terms
    joint = matcher.match([ce_real[0] + ce_real[1]], [ce_syn[0] + ce_syn[1]], [matcher.all_parameters()])
    assert joint.shape == (1,)
    torch.testing.assert_close(joint[0], per_model.sum())
    # a loss coupling both models (distillation-like): all-parameter matching = sum over per-model matchings
    md_real = F.mse_loss(real_out[0], real_out[1])
    md_syn = F.mse_loss(syn_out[0], syn_out[1])
    coupled = matcher.match([md_real], [md_syn], [matcher.all_parameters()])
    split = matcher.match([md_real, md_real], [md_syn, md_syn], [matcher.parameters_of(0), matcher.parameters_of(1)])
    torch.testing.assert_close(coupled[0], split.sum())
    (grad,) = torch.autograd.grad(coupled[0] + joint[0], syn)
    assert grad.abs().sum() > 0


def test_matcher_custom_objective_and_dtype() -> None:
    models = make_models(dtype=torch.float32)

    def objective(index: int, output: Tensor | AdapterOutput, target: Tensor) -> Tensor:
        return F.mse_loss(logits_of(output), target)

    matcher = HeterogeneousGradientMatcher(models, "mse", objective=objective)
    x = torch.randn(4, 3, 8, 8)
    t = torch.randn(4, 3)
    syn_x = torch.randn(2, 3, 8, 8, requires_grad=True)
    syn_t = torch.randn(2, 3)
    out = matcher(x, t, syn_x, syn_t)
    assert out.dtype == torch.float32
    for m, model in enumerate(models):
        params = list(model.parameters())
        ref_real = reference_grads(F.mse_loss(logits_of(model(x)), t), params, False)
        ref_syn = reference_grads(F.mse_loss(logits_of(model(syn_x)), syn_t), params, True)
        kept = [(a, b) for a, b in zip(ref_real, ref_syn, strict=True) if a is not None]
        expected = reference_distance([a for a, _ in kept], [b for _, b in kept], "mse")
        torch.testing.assert_close(out[m], expected)
    assert "objective=objective" in repr(matcher)
    assert "distance='mse'" in repr(matcher) and "num_models=2" in repr(matcher)
    assert matcher.num_models == 2


class OnlySmallBatches(nn.Module):
    """Uses ``extra`` only for batches of one sample, so real and synthetic losses reach different parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(3, 2)
        self.extra = nn.Parameter(torch.zeros(2))

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return out + self.extra if x.shape[0] == 1 else out


def test_matcher_bad_construction() -> None:
    models = make_models()
    with pytest.raises(ValueError, match="distance"):
        HeterogeneousGradientMatcher(models, "manhattan")
    with pytest.raises(ValueError, match="models"):
        HeterogeneousGradientMatcher([])
    with pytest.raises(TypeError, match="models"):
        HeterogeneousGradientMatcher(models[0])
    with pytest.raises(TypeError, match=r"models\[1\]"):
        HeterogeneousGradientMatcher([models[0], "vit"])
    with pytest.raises(ValueError, match="one parameter list per model"):
        HeterogeneousGradientMatcher(models, parameters=[list(models[0].parameters())])
    with pytest.raises(ValueError, match=r"parameters\[0\]\[0\].*models\[0\]"):
        HeterogeneousGradientMatcher(models, parameters=[list(models[1].parameters()), list(models[1].parameters())])
    with pytest.raises(TypeError, match=r"parameters\[1\]"):
        HeterogeneousGradientMatcher(models, parameters=[list(models[0].parameters()), models[1].head.weight])
    with pytest.raises(TypeError, match="parameters"):
        HeterogeneousGradientMatcher(models, parameters=3)
    with pytest.raises(ValueError, match=r"models\[0\]"):
        HeterogeneousGradientMatcher(models, parameters=lambda name, p: name.startswith("embed"))
    with pytest.raises(TypeError, match="objective"):
        HeterogeneousGradientMatcher(models, objective="ce")
    with pytest.raises(ValueError, match="eps"):
        HeterogeneousGradientMatcher(models, eps=-0.1)
    matcher = HeterogeneousGradientMatcher(models)
    with pytest.raises(ValueError, match="index"):
        matcher.parameters_of(2)
    with pytest.raises(TypeError, match="index"):
        matcher.parameters_of("0")


def test_matcher_bad_forward_input() -> None:
    matcher = HeterogeneousGradientMatcher(make_models())
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    sx = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    st_ = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"real_x.*real_target"):
        matcher(x, t[:2], sx, st_)
    with pytest.raises(ValueError, match=r"synthetic_x.*synthetic_target"):
        matcher(x, t, sx, t)
    with pytest.raises(ValueError, match="real_x"):
        matcher(x[:0], t[:0], sx, st_)
    with pytest.raises(ValueError, match="synthetic_x"):
        matcher(x, t, sx[:0], st_[:0])
    with pytest.raises(ValueError, match="real_x"):
        matcher(torch.zeros(3), t, sx, st_)
    with pytest.raises(TypeError, match="synthetic_target"):
        matcher(x, t, sx, [0, 1])
    with pytest.raises(ValueError, match="target"):  # class index out of range for 3 logits
        matcher(x, t, sx, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"models\[0\] on synthetic_x"):
        matcher(x, t, sx * float("nan"), st_)

    def per_sample(index: int, output: Tensor | AdapterOutput, target: Tensor) -> Tensor:
        return soft_cross_entropy(logits_of(output), target, "none")

    with pytest.raises(ValueError, match=r"models\[0\] on real_x"):
        HeterogeneousGradientMatcher(make_models(), objective=per_sample)(x, t, sx, st_)
    with pytest.raises(TypeError, match="logits"):
        HeterogeneousGradientMatcher([_DictOutput()])(x, t, sx, st_)
    only_one = HeterogeneousGradientMatcher([OnlySmallBatches()])
    with pytest.raises(ValueError, match=r"models\[0\]\.extra.*on synthetic_x.*on real_x"):
        only_one(torch.randn(3, 3), torch.tensor([0, 1, 0]), torch.randn(1, 3, requires_grad=True), torch.tensor([1]))


class _DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(3 * 8 * 8, 3).double()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"scores": self.body(x.flatten(1))}


def test_matcher_bad_match_input() -> None:
    models = make_models()
    matcher = HeterogeneousGradientMatcher(models)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 1, 2])

    def losses() -> list[Tensor]:
        return [F.cross_entropy(logits_of(m(x)), t) for m in models]

    with pytest.raises(ValueError, match="parameters"):
        matcher.match(losses()[:1], losses()[:1])
    with pytest.raises(ValueError, match="one parameter list per loss pair"):
        matcher.match(losses(), losses(), [matcher.parameters_of(0)])
    with pytest.raises(ValueError, match="same length"):
        matcher.match(losses(), losses()[:1])
    with pytest.raises(ValueError, match="real_losses"):
        matcher.match([], [])
    with pytest.raises(TypeError, match="synthetic_losses"):
        matcher.match(losses(), losses()[0])
    with pytest.raises(ValueError, match=r"synthetic_losses\[1\]"):
        real = losses()
        matcher.match(real, [real[0], real[1] * float("inf")])
    with pytest.raises(ValueError, match=r"real_losses\[0\]"):
        matcher.match([torch.ones(2, requires_grad=True).sum().expand(2), losses()[1]], losses())
    # model 1's parameters for model 0's loss: reached by neither loss
    with pytest.raises(ValueError, match="either loss"):
        matcher.match(losses()[:1], losses()[:1], [matcher.parameters_of(1)])
    # a parameter reached by only one loss is named after its model
    real, syn = losses(), losses()
    with pytest.raises(ValueError, match=r"models\[1\]\.\w+.*synthetic_losses\[0\].*real_losses\[0\]"):
        matcher.match([real[0]], [syn[0] + syn[1]], [matcher.all_parameters()])


def test_reexported_from_functional_package() -> None:
    import hmdc_modules.functional as functional

    assert functional.match_gradients is match_gradients
    assert functional.gradient_distance is gradient_distance
    assert functional.soft_cross_entropy is soft_cross_entropy


# ----------------------------------------------------------------------------------------------------------------
# Module-level checks (issue 14): ops without a second derivative, the argument names the caller used


class HardNet(nn.Module):
    """A MobileNetV3-like block: hardsigmoid has no second derivative in PyTorch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = nn.Hardsigmoid()
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.gate(self.conv(x)).mean(dim=(2, 3)))


def _batches(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    torch.manual_seed(0)
    return (
        torch.randn(4, 3, 8, 8, dtype=dtype),
        torch.tensor([0, 1, 2, 0]),
        torch.randn(2, 3, 8, 8, dtype=dtype, requires_grad=True),
        torch.tensor([1, 1]),
    )


def test_matcher_names_an_op_without_second_derivative_and_the_model() -> None:
    real_x, real_t, syn_x, syn_t = _batches()
    torch.manual_seed(0)
    matcher = HeterogeneousGradientMatcher([TinyConv(), HardNet()])
    with pytest.raises(ValueError, match=r"`models\[1\]` \(HardNet\) cannot be used.*aten::hardsigmoid_backward"):
        matcher(real_x, real_t, syn_x, syn_t)
    losses = [F.cross_entropy(m(real_x), real_t) for m in matcher.models]
    syn_losses = [F.cross_entropy(m(syn_x), syn_t) for m in matcher.models]
    with pytest.raises(ValueError, match=r"`models\[1\]` \(HardNet\).*synthetic_losses\[1\].*hardsigmoid_backward"):
        matcher.match(losses, syn_losses)
    # the functional form names its own argument
    model = HardNet()
    with pytest.raises(ValueError, match=r"model behind `parameters`.*`synthetic_loss`.*hardsigmoid_backward"):
        match_gradients(
            F.cross_entropy(model(real_x), real_t), F.cross_entropy(model(syn_x), syn_t), list(model.parameters())
        )


def test_second_derivative_check_runs_once_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmdc_modules.functional.matching as functional_matching

    calls: list[int] = []
    original = functional_matching.first_op_without_second_derivative

    def counting(gradients: Sequence[Tensor]) -> str | None:
        calls.append(len(gradients))
        return original(gradients)

    monkeypatch.setattr(functional_matching, "first_op_without_second_derivative", counting)
    real_x, real_t, syn_x, syn_t = _batches(torch.float64)
    matcher = HeterogeneousGradientMatcher(make_models())
    first = matcher(real_x, real_t, syn_x, syn_t)
    assert len(calls) == 2  # one walk per model at the first call
    second = matcher(real_x, real_t, syn_x, syn_t)
    assert len(calls) == 2 and torch.equal(first, second)  # checked once; the numbers do not depend on it
    first.sum().backward()  # and the checked graph really is twice differentiable
    assert syn_x.grad is not None and torch.isfinite(syn_x.grad).all()


def test_errors_name_the_argument_the_caller_passed() -> None:
    real_x, real_t, syn_x, syn_t = _batches(torch.float64)
    matcher = HeterogeneousGradientMatcher(make_models())
    with pytest.raises(ValueError, match=r"`real_target` class indices must lie in \[0, 3\).* got 7"):
        matcher(real_x, torch.tensor([0, 1, 7, 0]), syn_x, syn_t)
    with pytest.raises(TypeError, match=r"`synthetic_target` of shape \(2,\) holds class indices"):
        matcher(real_x, real_t, syn_x, torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"`real_target` probabilities must have the shape of `logits of models\[0\]"):
        matcher(real_x, torch.ones(4, 5, dtype=torch.float64) / 5, syn_x, syn_t)


def test_adapter_input_errors_name_the_matcher_argument() -> None:
    from hmdc_modules.adapters import CNNAdapter
    from hmdc_modules.condensation import ConvNet

    matcher = HeterogeneousGradientMatcher([CNNAdapter(ConvNet(num_classes=3, width=4))])
    real_x, real_t = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    syn_x = torch.randn(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    with pytest.raises(TypeError, match=r"`synthetic_x` does not suit `models\[0\]` \(CNNAdapter\): `x` has dtype "):
        matcher(real_x, real_t, syn_x, real_t)
    with pytest.raises(ValueError, match=r"`real_x` does not suit `models\[0\]`.*`x` has 1 channels"):
        matcher(real_x[:, :1], real_t, syn_x.float(), real_t)

"""Tests for hmdc_modules.condensation.selection: k-means, nearest-sample lookup, representative selection,
embedding."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from hmdc_modules.condensation import selection
from hmdc_modules.condensation.selection import (
    KMeansResult,
    embed,
    kmeans,
    nearest_to_centroids,
    select_representatives,
)

SETTINGS = settings(deadline=None, max_examples=20)


# ----------------------------------------------------------------------------------------------------------------
# Slow, obviously correct references (python loops over samples and centroids)
# ----------------------------------------------------------------------------------------------------------------


def ref_distance(a: Tensor, b: Tensor) -> float:
    return math.sqrt(sum((float(p) - float(q)) ** 2 for p, q in zip(a, b, strict=True)))


def ref_seeds(x: Tensor, k: int, power: int, generator: torch.Generator) -> list[int]:
    """k-means++ seeding drawing from ``generator`` exactly as documented: uniform first, then inverse CDF of d^p."""
    n = x.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=generator).item())]
    while len(chosen) < k:
        weights = [min(ref_distance(x[i], x[c]) for c in chosen) ** power for i in range(n)]
        total = sum(weights)
        if total == 0.0:
            chosen.append(int(torch.randint(n, (1,), generator=generator).item()))
            continue
        target = float(torch.rand((), generator=generator, dtype=torch.float64).item()) * total
        running, pick = 0.0, None
        for i, w in enumerate(weights):
            running += w
            if running > target:
                pick = i
                break
        if pick is None:  # rounding at the very top: the last positive weight
            pick = max(i for i, w in enumerate(weights) if w > 0)
        chosen.append(pick)
    return chosen


def ref_assign(x: Tensor, centroids: list[list[float]]) -> list[int]:
    result = []
    for i in range(x.shape[0]):
        distances = [ref_distance(x[i], torch.tensor(c)) for c in centroids]
        result.append(min(range(len(distances)), key=lambda j: (distances[j], j)))
    return result


def ref_kmeans(x: Tensor, k: int, iterations: int, tolerance: float, power: int, generator: torch.Generator):
    seeds = ref_seeds(x, k, power, generator)
    centroids = [[float(v) for v in x[i]] for i in seeds]
    assignments = ref_assign(x, centroids)
    run = 0
    for step in range(1, iterations + 1):
        updated = []
        for j in range(k):
            members = [i for i, a in enumerate(assignments) if a == j]
            if members:
                updated.append([sum(float(x[i, d]) for i in members) / len(members) for d in range(x.shape[1])])
            else:
                updated.append(list(centroids[j]))
        shift = max(ref_distance(torch.tensor(a), torch.tensor(b)) for a, b in zip(updated, centroids, strict=True))
        centroids = updated
        new_assignments = ref_assign(x, centroids)
        changed = new_assignments != assignments
        assignments = new_assignments
        run = step
        if not changed or shift <= tolerance:
            break
    return torch.tensor(centroids, dtype=x.dtype), torch.tensor(assignments), run


def ref_nearest(x: Tensor, centroids: Tensor, unique: bool) -> list[int]:
    taken: set[int] = set()
    result = []
    for j in range(centroids.shape[0]):
        candidates = [i for i in range(x.shape[0]) if not (unique and i in taken)]
        best = min(candidates, key=lambda i: (ref_distance(x[i], centroids[j]), i))
        taken.add(best)
        result.append(best)
    return result


def random_points(seed: int, n: int, d: int, dtype: torch.dtype = torch.float64) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=dtype) * 3.0


# ----------------------------------------------------------------------------------------------------------------
# kmeans
# ----------------------------------------------------------------------------------------------------------------


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 24),
    d=st.integers(1, 4),
    k_fraction=st.floats(0.0, 1.0),
    iterations=st.integers(0, 8),
    power=st.sampled_from([1, 2]),
)
def test_kmeans_matches_slow_reference(seed: int, n: int, d: int, k_fraction: float, iterations: int, power: int):
    x = random_points(seed, n, d)
    k = max(1, round(k_fraction * n))
    result = kmeans(x, k, iterations=iterations, seeding_power=power, generator=torch.Generator().manual_seed(seed + 1))
    centroids, assignments, run = ref_kmeans(x, k, iterations, 1e-4, power, torch.Generator().manual_seed(seed + 1))
    assert isinstance(result, KMeansResult)
    torch.testing.assert_close(result.centroids, centroids, rtol=0, atol=1e-9)
    assert result.assignments.tolist() == assignments.tolist()
    assert result.iterations_run == run
    assert result.assignments.dtype == torch.int64


def test_kmeans_runs_to_convergence_and_assignments_match_centroids():
    x = random_points(3, 60, 3)
    result = kmeans(x, 5, iterations=100, tolerance=0.0, generator=torch.Generator().manual_seed(0))
    # Converged: one more Lloyd update would not move any centroid.
    for j in range(5):
        members = x[result.assignments == j]
        if len(members):
            torch.testing.assert_close(result.centroids[j], members.mean(dim=0))
    assert result.assignments.tolist() == ref_assign(x, result.centroids.tolist())
    assert 1 <= result.iterations_run < 100


def test_kmeans_iterations_zero_returns_data_points_as_seeds():
    x = random_points(5, 30, 2)
    result = kmeans(x, 6, iterations=0, generator=torch.Generator().manual_seed(1))
    assert result.iterations_run == 0
    rows = {tuple(r) for r in x.tolist()}
    assert all(tuple(c) in rows for c in result.centroids.tolist())
    assert len({tuple(c) for c in result.centroids.tolist()}) == 6  # distinct points are never drawn twice


@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_recovers_well_separated_blobs(power: int, seed: int):
    generator = torch.Generator().manual_seed(100 + seed)
    centers = torch.tensor([[0.0, 0.0, 0.0], [1000.0, 0.0, 0.0], [0.0, 1000.0, 0.0], [0.0, 0.0, 1000.0]])
    x = torch.cat([c + torch.randn(30, 3, generator=generator) for c in centers])
    truth = torch.arange(4).repeat_interleave(30)
    result = kmeans(x, 4, seeding_power=power, generator=torch.Generator().manual_seed(seed))
    for blob in range(4):
        found = result.assignments[truth == blob]
        assert (found == found[0]).all(), "a blob was split"
        torch.testing.assert_close(result.centroids[found[0]], x[truth == blob].mean(dim=0))
    assert result.assignments.unique().numel() == 4


def test_kmeans_seeding_probabilities_follow_distance_power():
    # Points 0, 1, 3 on a line; k = 2, no Lloyd step: P(first = a, second = b) = 1/3 * d(a, b)^p / sum_c d(a, c)^p.
    x = torch.tensor([[0.0], [1.0], [3.0]])
    for power in (1, 2):
        generator = torch.Generator().manual_seed(power)
        counts: dict[tuple[float, float], int] = {}
        trials = 2000
        for _ in range(trials):
            c = kmeans(x, 2, iterations=0, seeding_power=power, generator=generator).centroids.flatten().tolist()
            counts[(c[0], c[1])] = counts.get((c[0], c[1]), 0) + 1
        points = [0.0, 1.0, 3.0]
        for a in points:
            others = [b for b in points if b != a]
            norm = sum(abs(a - b) ** power for b in others)
            for b in others:
                expected = abs(a - b) ** power / norm / 3.0
                assert abs(counts.get((a, b), 0) / trials - expected) < 0.03, (power, a, b)


def test_kmeans_fewer_distinct_points_than_k():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [5.0, -1.0]]).repeat(4, 1)
    result = kmeans(x, 5, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(c) for c in result.centroids.tolist()}
    assert distinct == {tuple(r) for r in x[:3].tolist()}
    assert torch.isfinite(result.centroids).all()
    assert torch.equal(x, result.centroids[result.assignments])


def test_kmeans_empty_cluster_keeps_its_centroid(monkeypatch: pytest.MonkeyPatch):
    # Duplicate seeds at 1.0 (index 2 twice): every sample nearest to 1.0 goes to the first copy (lowest index),
    # so after one update the second copy's cluster is empty and it must stay at 1.0.
    x = torch.tensor([[0.0], [0.0], [1.0], [10.0]])
    monkeypatch.setattr(selection, "_seed_plus_plus", lambda *args: torch.tensor([2, 2, 3]))
    result = kmeans(x, 3, iterations=1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.centroids.flatten(), torch.tensor([1.0 / 3.0, 1.0, 10.0]))
    assert result.assignments.tolist() == [0, 0, 1, 2]  # consistent with the returned centroids
    assert result.iterations_run == 1


def test_kmeans_is_deterministic_given_generator_and_uses_it():
    x = random_points(11, 200, 5, torch.float32)
    a = kmeans(x, 8, generator=torch.Generator().manual_seed(7))
    b = kmeans(x, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.assignments, b.assignments)
    seeds = {
        tuple(kmeans(x, 8, iterations=0, generator=torch.Generator().manual_seed(s)).centroids[0].tolist())
        for s in range(5)
    }
    assert len(seeds) > 1
    # The global RNG is not consumed when a generator is given.
    state = torch.get_rng_state()
    kmeans(x, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(state, torch.get_rng_state())


def test_kmeans_chunked_distances_match_unchunked(monkeypatch: pytest.MonkeyPatch):
    x = random_points(4, 50, 6)
    full = kmeans(x, 7, generator=torch.Generator().manual_seed(2))
    near_full = nearest_to_centroids(x, full.centroids)
    near_unique_full = nearest_to_centroids(x, full.centroids, unique=True)
    monkeypatch.setattr(selection, "_CHUNK_ELEMENTS", 5)  # several rows / centroid blocks per chunk boundary
    chunked = kmeans(x, 7, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(chunked.centroids, full.centroids, rtol=0, atol=1e-12)
    assert torch.equal(chunked.assignments, full.assignments)
    assert torch.equal(nearest_to_centroids(x, full.centroids), near_full)
    assert torch.equal(nearest_to_centroids(x, full.centroids, unique=True), near_unique_full)


def test_kmeans_keeps_dtype_and_handles_k_equal_n():
    x = random_points(9, 10, 3, torch.float32)
    result = kmeans(x, 10, generator=torch.Generator().manual_seed(0))
    assert result.centroids.dtype == torch.float32
    assert sorted(result.assignments.tolist()) == list(range(10))
    assert sorted(map(tuple, result.centroids.tolist())) == sorted(map(tuple, x.tolist()))


def test_kmeans_errors():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"`k`.*N = 5.*k = 6"):
        kmeans(x, 6)
    with pytest.raises(ValueError, match="`k`"):
        kmeans(x, 0)
    with pytest.raises(TypeError, match="`k`"):
        kmeans(x, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`x`"):
        kmeans(torch.randn(5), 2)
    with pytest.raises(TypeError, match="`x`"):
        kmeans(torch.ones(5, 2, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="`x`"):
        kmeans(torch.empty(0, 2), 1)
    with pytest.raises(ValueError, match=r"`x`.*NaN"):
        kmeans(torch.tensor([[0.0], [float("nan")]]), 1)
    with pytest.raises(ValueError, match="`seeding_power`"):
        kmeans(x, 2, seeding_power=3)
    with pytest.raises(ValueError, match="`iterations`"):
        kmeans(x, 2, iterations=-1)
    with pytest.raises(ValueError, match="`tolerance`"):
        kmeans(x, 2, tolerance=-1.0)
    with pytest.raises(TypeError, match="`generator`"):
        kmeans(x, 2, generator=0)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------
# nearest_to_centroids / select_representatives
# ----------------------------------------------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 30), k=st.integers(1, 30), d=st.integers(1, 5))
def test_nearest_to_centroids_matches_brute_force(seed: int, n: int, k: int, d: int):
    x = random_points(seed, n, d)
    centroids = random_points(seed + 1, k, d)
    got = nearest_to_centroids(x, centroids)
    assert got.tolist() == ref_nearest(x, centroids, unique=False)
    assert got.dtype == torch.int64
    if k <= n:
        got_unique = nearest_to_centroids(x, centroids, unique=True)
        assert got_unique.tolist() == ref_nearest(x, centroids, unique=True)
        assert len(set(got_unique.tolist())) == k


def test_nearest_to_centroids_unique_serves_centroids_in_order():
    x = torch.tensor([[0.0], [1.0], [10.0]])
    centroids = torch.tensor([[0.4], [0.1], [0.2]])
    assert nearest_to_centroids(x, centroids).tolist() == [0, 0, 0]
    assert nearest_to_centroids(x, centroids, unique=True).tolist() == [0, 1, 2]


def test_nearest_to_centroids_errors():
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"`centroids`.*width"):
        nearest_to_centroids(x, torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"K = 4.*N = 3"):
        nearest_to_centroids(x, torch.randn(4, 2), unique=True)
    with pytest.raises(ValueError, match="dtype"):
        nearest_to_centroids(x, torch.randn(2, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="`x`"):
        nearest_to_centroids([[0.0, 1.0]], torch.randn(2, 2))  # type: ignore[arg-type]


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 40), k=st.integers(1, 40), unique=st.booleans())
def test_select_representatives_is_kmeans_then_nearest(seed: int, n: int, k: int, unique: bool):
    x = random_points(seed, n, 3)
    if not unique and k > n:
        with pytest.raises(ValueError, match="`k`"):
            select_representatives(x, k)
        return
    got = select_representatives(x, k, unique=unique, generator=torch.Generator().manual_seed(seed))
    if unique and k >= n:
        assert got.tolist() == list(range(n))
        return
    centroids = kmeans(x, k, generator=torch.Generator().manual_seed(seed)).centroids
    assert got.shape == (k,)
    # A two-sample cluster puts its centroid at an exact tie, so check optimality instead of the tie-break: each
    # centroid (in order) got a sample at minimal distance among those still allowed.
    taken: set[int] = set()
    for j, index in enumerate(got.tolist()):
        allowed = [i for i in range(n) if not (unique and i in taken)]
        assert index in allowed
        best = min(ref_distance(x[i], centroids[j]) for i in allowed)
        assert ref_distance(x[index], centroids[j]) <= best + 1e-9
        taken.add(index)
    if unique:
        assert len(set(got.tolist())) == k


def test_select_representatives_picks_one_sample_per_blob():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [500.0, 0.0], [0.0, 500.0]])
    x = torch.cat([c + torch.randn(20, 2, generator=generator) for c in centers])
    picked = select_representatives(x, 3, unique=True, generator=generator)
    assert sorted((picked // 20).tolist()) == [0, 1, 2]


def test_select_representatives_handles_a_large_embedding_quickly():
    # The shape of one real class at CIFAR scale is 5000 x 2048; a quarter of it keeps the test fast on 2 cores.
    x = torch.randn(1250, 2048, generator=torch.Generator().manual_seed(0))
    picked = select_representatives(x, 32, iterations=3, generator=torch.Generator().manual_seed(1))
    assert picked.shape == (32,) and int(picked.max()) < 1250


# ----------------------------------------------------------------------------------------------------------------
# embed
# ----------------------------------------------------------------------------------------------------------------


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.norm = nn.BatchNorm2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.drop(self.conv(x)))


def test_embed_matches_eval_forward_and_restores_modes():
    torch.manual_seed(0)
    model = _Tiny()
    model.train()
    model.norm.eval()  # mixed modes must survive the call
    images = torch.randn(7, 3, 4, 4, requires_grad=True)
    out = embed(model, images, batch_size=3)
    assert model.training and model.conv.training and model.drop.training and not model.norm.training
    model.eval()
    with torch.no_grad():
        expected = model(images).flatten(1)
    torch.testing.assert_close(out, expected)
    assert out.shape == (7, 2 * 4 * 4)
    assert not out.requires_grad
    assert torch.equal(model.norm.running_mean, torch.zeros(2))  # eval: BatchNorm statistics untouched


def test_embed_with_callable_and_device():
    images = torch.arange(10.0).reshape(5, 2)
    out = embed(lambda b: b * 2, images, batch_size=2, device="cpu")
    torch.testing.assert_close(out, images * 2)


def test_embed_restores_modes_when_model_raises():
    class Boom(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            raise RuntimeError("boom")

    model = Boom().train()
    with pytest.raises(RuntimeError, match="boom"):
        embed(model, torch.zeros(2, 1))
    assert model.training


def test_embed_errors():
    with pytest.raises(TypeError, match="`model`"):
        embed(3, torch.zeros(2, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`images`"):
        embed(lambda b: b, torch.zeros(0, 1))
    with pytest.raises(ValueError, match="`batch_size`"):
        embed(lambda b: b, torch.zeros(2, 1), batch_size=0)
    with pytest.raises(TypeError, match="`model` must return"):
        embed(lambda b: (b,), torch.zeros(2, 1))  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="one row per image"):
        embed(lambda b: b.sum(), torch.zeros(2, 1))


def _example_embed_images(adapter: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """The example's former embed_images, written out: deepest tapped layer's semantic vector, eval mode, batches."""
    was_training = adapter.training
    adapter.eval()
    out = torch.cat(
        [adapter(images[i : i + batch_size]).features[-1].semantic for i in range(0, len(images), batch_size)]
    )
    adapter.train(was_training)
    return out


def test_embed_with_take_gives_the_examples_adapter_embedding_bitwise():
    from hmdc_modules import auto_adapter
    from hmdc_modules.condensation import create_model

    torch.manual_seed(0)
    adapter = auto_adapter(create_model("convnet", 10))
    adapter.train()
    images = torch.randn(7, 3, 32, 32)
    expected = _example_embed_images(adapter, images, batch_size=4)
    assert adapter.training
    out = embed(adapter, images, 4, take=lambda output: output.features[-1].semantic)
    assert torch.equal(out, expected) and out.shape == (7, expected.shape[1])
    assert adapter.training and all(m.training for m in adapter.modules())
    with pytest.raises(TypeError, match="`model` must return"):
        embed(adapter, images, 4)  # the adapter's structured output needs `take`
    with pytest.raises(TypeError, match="`take` must be a callable"):
        embed(adapter, images, 4, take="semantic")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`take` must return"):
        embed(adapter, images, 4, take=lambda output: output.features)

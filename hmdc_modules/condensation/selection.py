r"""Representative real-batch selection by k-means (DREAM-style).

Every few inner steps HMDC replaces the random real batch of a class by a *representative* one: it embeds all real
images of the class with the current model, clusters the embeddings with k-means ($K$ = batch size) and takes, for
each centroid, the nearest real image. The same machinery with ``unique=True`` picks the distinct real images that
initialise the synthetic set.

Everything here is plain PyTorch (any device, any floating dtype). Distances are computed through
$\lVert x\rVert^2 - 2\,x\cdot c + \lVert c\rVert^2$ in row or column chunks, so no $(N, K, D)$ intermediate is ever
built and the $(N, K)$ distance matrix is never held whole: 5000 embeddings of width 2048 cluster in a few megabytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from hmdc_modules._validation import (
    check_finite,
    check_non_negative_float,
    check_positive_int,
    check_tensor,
    describe,
)

__all__ = ["KMeansResult", "embed", "kmeans", "nearest_to_centroids", "select_representatives"]

# Upper bound on the number of entries of one chunk of the distance matrix (float32: 32 MiB).
_CHUNK_ELEMENTS = 1 << 23


class KMeansResult(NamedTuple):
    """The outcome of [`kmeans`][hmdc_modules.condensation.selection.kmeans].

    Attributes:
        centroids: The cluster centres after the last Lloyd update.
        assignments: For every sample, the index of its nearest centroid in ``centroids`` (ties go to the lowest
            index), so ``assignments`` is always consistent with ``centroids``.
        iterations_run: How many Lloyd updates were performed (0 when ``iterations=0``: seeding only).

    Shape:
        - centroids: $(K, D)$, dtype and device of the input.
        - assignments: $(N,)$, ``torch.int64``.

    Examples:
        >>> x = torch.tensor([[0.0], [0.2], [9.8], [10.0]])
        >>> centroids, assignments, iterations_run = kmeans(x, 2, generator=torch.Generator().manual_seed(0))
        >>> sorted(round(v, 3) for v in centroids.flatten().tolist()), assignments[0] == assignments[1]
        ([0.1, 9.9], tensor(True))
    """

    centroids: Tensor
    assignments: Tensor
    iterations_run: int


def _squared_norms(x: Tensor) -> Tensor:
    return (x * x).sum(dim=1)


def _squared_distances(x: Tensor, x_norms: Tensor, centroids: Tensor, c_norms: Tensor) -> Tensor:
    """Squared Euclidean distances between the rows of ``x`` and of ``centroids``, clamped at zero."""
    distances = x_norms[:, None] - 2.0 * (x @ centroids.T) + c_norms[None, :]
    return distances.clamp_min_(0.0)


def _assign(x: Tensor, x_norms: Tensor, centroids: Tensor) -> Tensor:
    """Index of the nearest centroid for every row of ``x`` (ties to the lowest index), chunked over rows."""
    c_norms = _squared_norms(centroids)
    rows = max(1, _CHUNK_ELEMENTS // centroids.shape[0])
    parts = [
        _squared_distances(x[start : start + rows], x_norms[start : start + rows], centroids, c_norms).argmin(dim=1)
        for start in range(0, x.shape[0], rows)
    ]
    return torch.cat(parts)


def _distances_to_point(x: Tensor, point: Tensor) -> Tensor:
    """Euclidean distances from every row of ``x`` to one point, from explicit differences.

    Explicit differences (rather than the norm expansion) make the distance of a sample to an identical centroid
    exactly zero, so duplicates of chosen centroids are never drawn again while another point is left. ``cdist``
    in this mode builds no $(N, D)$ temporary.
    """
    return torch.cdist(x, point[None], compute_mode="donot_use_mm_for_euclid_dist")[:, 0]


def _random_index(n: int, generator: torch.Generator | None) -> int:
    device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(n, (1,), generator=generator, device=device).item())


def _weighted_index(weights: Tensor, generator: torch.Generator | None) -> int | None:
    """Draw an index with probability proportional to ``weights`` (inverse CDF); ``None`` if all weights are 0."""
    cumulative = weights.to(torch.float64).cumsum(dim=0)
    total = float(cumulative[-1].item())
    if not total > 0.0:
        return None
    device = generator.device if generator is not None else torch.device("cpu")
    uniform = float(torch.rand((), generator=generator, device=device, dtype=torch.float64).item())
    target = torch.tensor([uniform * total], dtype=torch.float64, device=cumulative.device)
    index = int(torch.searchsorted(cumulative, target, right=True).item())
    # Guard against ``uniform * total`` rounding up to ``total``: fall back to the last index with positive weight.
    last_positive = int(torch.nonzero(weights > 0).max().item())
    return min(index, last_positive)


def _seed_plus_plus(x: Tensor, k: int, power: int, generator: torch.Generator | None) -> Tensor:
    """k-means++ seeding: indices of the ``k`` samples chosen as initial centroids."""
    n = x.shape[0]
    chosen = [_random_index(n, generator)]
    closest = _distances_to_point(x, x[chosen[0]])
    for _ in range(1, k):
        index = _weighted_index(closest if power == 1 else closest * closest, generator)
        if index is None:  # every sample coincides with a chosen centroid: fewer distinct points than k
            index = _random_index(n, generator)
        chosen.append(index)
        closest = torch.minimum(closest, _distances_to_point(x, x[index]))
    return torch.tensor(chosen, dtype=torch.int64, device=x.device)


def _check_kmeans_arguments(
    x: Tensor, k: int, iterations: int, tolerance: float, seeding_power: int, generator: torch.Generator | None
) -> None:
    check_tensor("x", x, ndim=2, floating=True, nonempty=True)
    check_positive_int("k", k)
    check_positive_int("iterations", iterations, minimum=0)
    check_non_negative_float("tolerance", tolerance)
    if isinstance(seeding_power, bool) or seeding_power not in (1, 2):
        raise ValueError(f"`seeding_power` must be 1 (distance) or 2 (squared distance), got {describe(seeding_power)}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {describe(generator)}")
    if k > x.shape[0]:
        raise ValueError(f"`k` must be at most the number of samples N = {x.shape[0]} in `x`, got k = {k}")
    check_finite("x", x)


def kmeans(
    x: Tensor,
    k: int,
    *,
    iterations: int = 100,
    tolerance: float = 1e-4,
    seeding_power: int = 1,
    generator: torch.Generator | None = None,
) -> KMeansResult:
    r"""Cluster the rows of ``x`` into ``k`` groups with k-means++ seeding and Lloyd iterations (Euclidean).

    Seeding: the first centroid is a sample drawn uniformly; each further one is a sample drawn with probability
    proportional to $d^p$, where $d$ is its distance to the nearest centroid chosen so far and $p$ is
    ``seeding_power`` (1, the reference's choice; 2, the classical k-means++). If every sample already coincides with
    a chosen centroid (fewer distinct points than ``k``), the next one is drawn uniformly, so centroids may repeat.

    Lloyd: assign every sample to its nearest centroid (ties to the lowest index), move every centroid to the mean
    of its samples, repeat. A centroid whose cluster is empty keeps its previous position (no re-seeding, so no
    extra randomness). Stops after ``iterations`` updates, or earlier once an update changes no assignment or moves
    no centroid by more than ``tolerance`` (Euclidean, in the units of ``x``).

    All random draws come from ``generator`` (on its device; the default CPU generator when ``None``), so the result
    is deterministic given a seeded generator and the same input.

    Args:
        x: The samples, one per row. Any floating dtype; computations stay in that dtype and on that device.
        k: Number of clusters, ``1 <= k <= N``.
        iterations: Maximum number of Lloyd updates (0: return the seeds).
        tolerance: Early-stopping threshold on the largest centroid movement of one update (``>= 0``).
        seeding_power: Exponent $p$ of the k-means++ sampling weights $d^p$: 1 or 2.
        generator: Source of randomness for the seeding.

    Returns:
        A [`KMeansResult`][hmdc_modules.condensation.selection.KMeansResult] ``(centroids, assignments,
        iterations_run)``.

    Raises:
        TypeError: If ``x`` is not a floating tensor, an integer argument is not an ``int`` or ``generator`` is not
            a ``torch.Generator``.
        ValueError: If ``x`` is not 2-D, is empty or not finite, ``k > N``, or an argument is out of range.

    Shape:
        - x: $(N, D)$
        - output centroids: $(K, D)$; output assignments: $(N,)$

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.cat([torch.randn(20, 2, generator=g) - 5, torch.randn(20, 2, generator=g) + 5])
        >>> result = kmeans(x, 2, generator=g)
        >>> result.centroids.shape, result.assignments.shape
        (torch.Size([2, 2]), torch.Size([40]))
        >>> bool((result.assignments[:20] == result.assignments[0]).all())
        True
    """
    _check_kmeans_arguments(x, k, iterations, tolerance, seeding_power, generator)
    x_norms = _squared_norms(x)
    centroids = x[_seed_plus_plus(x, k, seeding_power, generator)].clone()
    assignments = _assign(x, x_norms, centroids)
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    iterations_run = 0
    for step in range(1, iterations + 1):
        sums = torch.zeros_like(centroids).index_add_(0, assignments, x)
        counts = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, assignments, ones)
        filled = counts > 0
        updated = torch.where(filled[:, None], sums / counts.clamp_min(1)[:, None], centroids)
        shift = float((updated - centroids).norm(dim=1).max().item())
        centroids = updated
        new_assignments = _assign(x, x_norms, centroids)
        changed = bool((new_assignments != assignments).any().item())
        assignments = new_assignments
        iterations_run = step
        if not changed or shift <= tolerance:
            break
    return KMeansResult(centroids, assignments, iterations_run)


def nearest_to_centroids(x: Tensor, centroids: Tensor, *, unique: bool = False) -> Tensor:
    """Index of the sample nearest to each centroid (Euclidean).

    With ``unique=False`` every centroid independently gets its nearest sample, so two centroids may share one (the
    reference's real-batch selection). With ``unique=True`` the centroids are served in order ``0, 1, ..., K-1`` and
    each gets its nearest sample not taken by an earlier centroid (the reference's initialisation), so the indices
    are distinct. Ties go to the lowest sample index.

    Args:
        x: The samples, one per row.
        centroids: The centroids, one per row, same width, dtype and device as ``x``.
        unique: Whether the returned indices must be distinct (requires ``K <= N``).

    Returns:
        ``torch.int64`` indices into the rows of ``x``, one per centroid, on the device of ``x``.

    Raises:
        TypeError: If an input is not a floating tensor.
        ValueError: If a shape does not fit, the inputs are not finite, or ``unique=True`` with ``K > N``.

    Shape:
        - x: $(N, D)$
        - centroids: $(K, D)$
        - output: $(K,)$

    Examples:
        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
        >>> nearest_to_centroids(x, torch.tensor([[0.2, 0.0], [0.1, 0.0]]))
        tensor([0, 0])
        >>> nearest_to_centroids(x, torch.tensor([[0.2, 0.0], [0.1, 0.0]]), unique=True)
        tensor([0, 1])
    """
    check_tensor("x", x, ndim=2, floating=True, nonempty=True)
    check_tensor("centroids", centroids, ndim=2, floating=True, nonempty=True)
    if centroids.shape[1] != x.shape[1]:
        raise ValueError(f"`centroids` must have the width D = {x.shape[1]} of `x`, got shape {tuple(centroids.shape)}")
    if centroids.dtype != x.dtype or centroids.device != x.device:
        raise ValueError(
            f"`centroids` must have the dtype and device of `x` ({x.dtype}, {x.device}), "
            f"got {centroids.dtype} on {centroids.device}"
        )
    n, k = x.shape[0], centroids.shape[0]
    if unique and k > n:
        raise ValueError(f"with unique=True, the number of centroids K = {k} must be at most N = {n} samples in `x`")
    check_finite("x", x)
    check_finite("centroids", centroids)

    x_norms = _squared_norms(x)
    block = max(1, _CHUNK_ELEMENTS // n)
    chosen: list[Tensor] = []
    taken = torch.zeros(n, dtype=torch.bool, device=x.device) if unique else None
    for start in range(0, k, block):
        part = centroids[start : start + block]
        distances = _squared_distances(x, x_norms, part, _squared_norms(part))  # (N, block)
        if taken is None:
            chosen.append(distances.argmin(dim=0))
            continue
        for column in range(part.shape[0]):
            index = distances[:, column].masked_fill(taken, float("inf")).argmin()
            taken[index] = True
            chosen.append(index.reshape(1))
    return torch.cat(chosen).to(torch.int64)


def select_representatives(
    embeddings: Tensor,
    k: int,
    *,
    unique: bool = False,
    generator: torch.Generator | None = None,
    iterations: int = 100,
    tolerance: float = 1e-4,
    seeding_power: int = 1,
) -> Tensor:
    """Pick ``k`` representative samples: k-means on ``embeddings``, then the sample nearest to each centroid.

    This is the reference's real-batch selection (``unique=False``: duplicates possible, always ``k`` indices) and
    its initialisation (``unique=True``: distinct indices). With ``unique=True`` and ``k >= N`` all ``N`` indices
    ``0..N-1`` are returned without clustering (so the result then has ``N``, not ``k``, entries).

    Args:
        embeddings: One feature vector per sample (e.g. from [`embed`][hmdc_modules.condensation.selection.embed]).
        k: Number of samples to pick (clusters).
        unique: Whether the indices must be distinct (see
            [`nearest_to_centroids`][hmdc_modules.condensation.selection.nearest_to_centroids]).
        generator: Source of randomness for the k-means++ seeding.
        iterations: Maximum number of Lloyd updates.
        tolerance: Early-stopping threshold of [`kmeans`][hmdc_modules.condensation.selection.kmeans].
        seeding_power: Exponent of the k-means++ sampling weights (1: distance, the reference; 2: squared).

    Returns:
        ``torch.int64`` indices into the rows of ``embeddings``.

    Raises:
        TypeError: If ``embeddings`` is not a floating tensor or an argument has the wrong type.
        ValueError: If ``embeddings`` is not 2-D, empty or not finite, or ``k > N`` with ``unique=False``.

    Shape:
        - embeddings: $(N, D)$
        - output: $(K,)$, or $(N,)$ when ``unique=True`` and $K \\ge N$.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> features = torch.randn(100, 8, generator=g)
        >>> select_representatives(features, 10, unique=True, generator=g).unique().numel()
        10
    """
    check_tensor("embeddings", embeddings, ndim=2, floating=True, nonempty=True)
    check_positive_int("k", k)
    if not isinstance(unique, bool):
        raise TypeError(f"`unique` must be a bool, got {describe(unique)}")
    if unique and k >= embeddings.shape[0]:
        check_finite("embeddings", embeddings)
        return torch.arange(embeddings.shape[0], dtype=torch.int64, device=embeddings.device)
    if k > embeddings.shape[0]:
        raise ValueError(
            f"`k` must be at most the number of samples N = {embeddings.shape[0]} in `embeddings`, got k = {k}"
        )
    result = kmeans(
        embeddings,
        k,
        iterations=iterations,
        tolerance=tolerance,
        seeding_power=seeding_power,
        generator=generator,
    )
    return nearest_to_centroids(embeddings, result.centroids, unique=unique)


def embed(
    model: nn.Module | Callable[[Tensor], Tensor],
    images: Tensor,
    batch_size: int = 256,
    *,
    device: torch.device | str | None = None,
    take: Callable[[Any], Tensor] | None = None,
) -> Tensor:
    """Run ``model`` over ``images`` in batches without gradients and flatten each output to one vector per image.

    The package's one eval-mode embedding helper. An ``nn.Module`` is switched to eval mode for the call and every
    submodule's ``training`` flag is restored afterwards (also when the model raises). Any other callable is simply
    called under ``torch.no_grad()``. ``take`` picks the embedding out of a structured output, so a model behind an
    adapter keeps its eval mode: the deepest tapped layer's semantic vector (CNN: global mean; ViT: CLS token), as
    the condensation example uses for k-means selection, is

    ```python
    embed(adapter, images, 500, take=lambda out: out.features[-1].semantic)
    ```

    and gives exactly the values of the per-batch loop ``adapter.eval(); adapter(images[i:i + 500])...`` (the same
    batches run through the same modules; ``no_grad`` does not change forward values).

    Args:
        model: The feature extractor: an ``nn.Module`` or a callable mapping a batch to a tensor whose first
            dimension is the batch (e.g. ``lambda x: net.features(x)``).
        images: The inputs, batch first.
        batch_size: Number of images per forward pass.
        device: Where to run the batches; ``None`` keeps ``images`` where they are. The result stays there.
        take: Maps the model's output for one batch to the tensor to embed (``None``: the output itself).

    Returns:
        The flattened outputs ``model(batch).flatten(1)``, concatenated in input order.

    Raises:
        TypeError: If ``model`` or ``take`` is not callable, ``images`` is not a tensor, ``batch_size`` is not an
            int, or the model (after ``take``) does not return a tensor.
        ValueError: If ``images`` is empty, ``batch_size < 1`` or the model's output does not have one row per image.

    Shape:
        - images: $(N, *)$, e.g. $(N, C, H, W)$
        - output: $(N, D)$ with $D$ the number of elements of one image's output.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(2))
        >>> embed(net, torch.rand(10, 3, 8, 8), batch_size=4).shape
        torch.Size([10, 16])
    """
    if not callable(model):
        raise TypeError(f"`model` must be an nn.Module or a callable, got {describe(model)}")
    if take is not None and not callable(take):
        raise TypeError(f"`take` must be a callable mapping the model's output to a tensor, got {describe(take)}")
    check_tensor("images", images, nonempty=True)
    check_positive_int("batch_size", batch_size)
    modes = [(module, module.training) for module in model.modules()] if isinstance(model, nn.Module) else []
    outputs: list[Tensor] = []
    try:
        if isinstance(model, nn.Module):
            model.eval()
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size]
                if device is not None:
                    batch = batch.to(device)
                output = model(batch)
                if take is not None:
                    output = take(output)
                if not isinstance(output, Tensor):
                    what = "`take` must return" if take is not None else "`model` must return (or pass `take`)"
                    raise TypeError(f"{what} a torch.Tensor, got {describe(output)}")
                if output.ndim == 0 or output.shape[0] != batch.shape[0]:
                    raise ValueError(
                        f"`model` must return one row per image: a batch of {batch.shape[0]} gave an output of shape "
                        f"{tuple(output.shape)}"
                    )
                outputs.append(output.reshape(output.shape[0], -1))
    finally:
        for module, training in modes:
            module.training = training
    return torch.cat(outputs)

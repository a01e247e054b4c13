"""Functional distribution matching: the distance between the mean embeddings of a real and a synthetic batch.

Distribution matching (DM, Zhao & Bilen 2023) condenses by making the synthetic images' embeddings, under a network,
have the same mean as the real images' embeddings of the same class, under the same augmentation. Unlike gradient
matching it needs no parameter gradient: the loss is differentiable with respect to the synthetic images through
one forward pass, and the real statistics are constants (detached).

Examples:
    >>> import torch
    >>> from torch import nn
    >>> embed = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> real, syn = torch.randn(16, 3, 8, 8), torch.randn(4, 3, 8, 8, requires_grad=True)
    >>> loss = mean_embedding_distance(embed(real), embed(syn))
    >>> loss.backward()
    >>> syn.grad.shape
    torch.Size([4, 3, 8, 8])
"""

from __future__ import annotations

import torch
from torch import Tensor

from hmdc_modules._validation import check_all_finite, check_choice, check_non_negative_float, check_tensor

__all__ = ["STATISTIC_DISTANCES", "mean_embedding_distance"]

STATISTIC_DISTANCES: tuple[str, ...] = ("sse", "mse", "cosine")
"""Distances between two mean embeddings accepted by
[`mean_embedding_distance`][hmdc_modules.functional.feature_matching.mean_embedding_distance]: ``"sse"`` (sum of
squared differences, DM's), ``"mse"`` (their mean) and ``"cosine"`` (one minus the cosine similarity)."""


def mean_embedding_distance(
    real: Tensor,
    synthetic: Tensor,
    distance: str = "sse",
    *,
    eps: float = 1e-8,
    real_name: str = "real",
    synthetic_name: str = "synthetic",
) -> Tensor:
    r"""The distance between the batch means of real and synthetic embeddings (DM's loss for one class).

    With $\mu_r = \frac{1}{B_r} \sum_i e(x^{\mathrm{real}}_i)$ (a constant: ``real`` is detached) and
    $\mu_s = \frac{1}{B_s} \sum_i e(x^{\mathrm{syn}}_i)$, over every element of the embedding:

    - ``"sse"``: $\lVert \mu_r - \mu_s \rVert_2^2$ (DM);
    - ``"mse"``: the same divided by the number of elements (independent of the embedding's size);
    - ``"cosine"``: $1 - \frac{\mu_r \cdot \mu_s}{\max(\lVert \mu_r \rVert \lVert \mu_s \rVert, \epsilon)}$.

    Args:
        real: Embeddings of the real batch, batch first; any trailing shape (e.g. $(B_r, D)$, or tokens
            $(B_r, L, T, d)$ in a shared space).
        synthetic: Embeddings of the synthetic batch, with the trailing shape of ``real``.
        distance: One of [`STATISTIC_DISTANCES`][hmdc_modules.functional.feature_matching.STATISTIC_DISTANCES].
        eps: Lower bound of the norm product in ``"cosine"``.
        real_name: How error messages call ``real``.
        synthetic_name: How error messages call ``synthetic``.

    Returns:
        A scalar, differentiable with respect to ``synthetic``, in the dtype of ``synthetic``.

    Raises:
        TypeError: If an input is not a floating tensor.
        ValueError: If a batch is empty, the trailing shapes differ, ``distance`` is unknown, ``eps`` is negative,
            or an embedding holds NaN or infinity (the message names it).

    Shape:
        - real: $(B_r, \ast)$; synthetic: $(B_s, \ast)$
        - output: $()$

    Examples:
        >>> import torch
        >>> real = torch.tensor([[1.0, 0.0], [3.0, 2.0]])        # mean (2, 1)
        >>> syn = torch.tensor([[0.0, 1.0]], requires_grad=True)  # mean (0, 1)
        >>> mean_embedding_distance(real, syn)
        tensor(4., grad_fn=<SumBackward0>)
        >>> mean_embedding_distance(real, syn, "mse").item()
        2.0
    """
    check_choice("distance", distance, STATISTIC_DISTANCES)
    check_non_negative_float("eps", eps)
    for name, value in ((real_name, real), (synthetic_name, synthetic)):
        check_tensor(name, value, floating=True, nonempty=True)
        if value.ndim < 2:
            raise ValueError(f"`{name}` must have at least 2 dimensions (batch first), got shape {tuple(value.shape)}")
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(
            f"`{real_name}` and `{synthetic_name}` must have the same shape after the batch dimension, got "
            f"{tuple(real.shape)} and {tuple(synthetic.shape)}"
        )
    check_all_finite([(real_name, real), (synthetic_name, synthetic)])
    mean_real = real.detach().to(synthetic.dtype).mean(0).flatten()
    mean_syn = synthetic.mean(0).flatten()
    if distance == "cosine":
        norms = (mean_real.norm() * mean_syn.norm()).clamp_min(eps)
        return 1 - torch.dot(mean_real, mean_syn) / norms
    squared = (mean_real - mean_syn).pow(2)
    return squared.sum() if distance == "sse" else squared.mean()

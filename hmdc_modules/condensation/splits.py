"""The fixed pretraining/condensation split of a labelled training set (CIFAR-10 protocol v2).

Pretrained models stand in for ImageNet weights at CPU scale: they are pretrained on one half of CIFAR-10 train
(``P``) and the set is condensed from the other half (``C``), so no image the condensation sees was used to make
the models it is evaluated on. The split is stratified: each class is cut in two on its own, by a random
permutation drawn from a generator seeded with ``seed`` and the class index, so

- the halves are disjoint and together cover every sample;
- each class keeps ``round(n_c * fraction)`` samples in ``P`` (2,500 of 5,000 per CIFAR-10 class at 0.5);
- the split depends only on the seed and on each class's samples in their order of appearance, not on how the
  classes are interleaved (torchvision's pickled batches and class-major image folders give the same split as long
  as each class lists its images in the same order) nor on which other classes are present;
- the same seed always gives the same split (PyTorch's CPU generator is deterministic across platforms).

[`PC_SPLIT_SEED`][hmdc_modules.condensation.splits.PC_SPLIT_SEED] is the seed of protocol v2.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from hmdc_modules._validation import check_choice, check_tensor, describe

__all__ = ["PC_SPLIT_SEED", "SPLIT_SUBSETS", "pc_split", "subset_indices"]

PC_SPLIT_SEED: int = 20240
"""The fixed seed of the P/C split of CIFAR-10 train used by protocol v2 (pretraining on P, condensing from C)."""

SPLIT_SUBSETS: tuple[str, ...] = ("P", "C", "all")
"""Names accepted by [`subset_indices`][hmdc_modules.condensation.splits.subset_indices]."""

_CLASS_STRIDE = 1_000_003  # a prime: seed * stride + class never collides for class indices below it


def _check_labels(labels: object) -> Tensor:
    check_tensor("labels", labels, ndim=1)
    assert isinstance(labels, Tensor)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"`labels` must be an integer tensor of class indices, got dtype {labels.dtype}")
    if labels.numel() == 0:
        raise ValueError("`labels` must hold at least one label, got an empty tensor")
    if int(labels.min()) < 0:
        raise ValueError(f"`labels` must be non-negative class indices, got minimum {int(labels.min())}")
    return labels.detach().cpu().to(torch.int64)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an int, got {describe(seed)}")
    if not 0 <= seed < 2**40:
        raise ValueError(f"`seed` must be in [0, 2**40), got {seed}")
    return seed


def pc_split(labels: Tensor, *, seed: int = PC_SPLIT_SEED, fraction: float = 0.5) -> tuple[Tensor, Tensor]:
    """Split sample indices into a pretraining part ``P`` and a condensation part ``C``, class by class.

    For each class ``c`` (in any order), its sample indices are taken in ascending order, permuted by
    ``torch.randperm`` with a generator seeded with ``seed * 1000003 + c``, and the first ``round(n_c * fraction)``
    of the permutation go to ``P``, the rest to ``C``.

    Args:
        labels: Integer class index of every sample, in the order the dataset lists them (e.g. the labels
            [`load_cifar10`][hmdc_modules.condensation.load_cifar10] returns).
        seed: The split's seed; [`PC_SPLIT_SEED`][hmdc_modules.condensation.splits.PC_SPLIT_SEED] is protocol v2's.
        fraction: Share of each class that goes to ``P``, strictly between 0 and 1.

    Returns:
        ``(p_indices, c_indices)``: two sorted ``int64`` tensors of positions into ``labels``, disjoint, together
        covering every position.

    Raises:
        TypeError: If ``labels`` is not an integer tensor, ``seed`` not an int or ``fraction`` not a number.
        ValueError: If ``labels`` is not 1-D, is empty or holds a negative label, ``seed`` is out of range, or
            ``fraction`` is not strictly between 0 and 1.

    Shape:
        - labels: $(N,)$.
        - Output: $(N_P,)$ and $(N - N_P,)$.

    Examples:
        >>> labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
        >>> p, c = pc_split(labels)
        >>> len(p), len(c), sorted(p.tolist() + c.tolist()) == list(range(8))
        (4, 4, True)
        >>> labels[p].bincount().tolist()
        [2, 2]
    """
    labels = _check_labels(labels)
    seed = _check_seed(seed)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(f"`fraction` must be a number, got {describe(fraction)}")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"`fraction` must be strictly between 0 and 1, got {fraction}")
    p_parts, c_parts = [], []
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        generator = torch.Generator().manual_seed(seed * _CLASS_STRIDE + int(c))
        order = members[torch.randperm(members.numel(), generator=generator)]
        n_p = math.floor(members.numel() * float(fraction) + 0.5)
        p_parts.append(order[:n_p])
        c_parts.append(order[n_p:])
    return torch.cat(p_parts).sort().values, torch.cat(c_parts).sort().values


def subset_indices(
    labels: Tensor, subset: Literal["P", "C", "all"], *, seed: int = PC_SPLIT_SEED, fraction: float = 0.5
) -> Tensor:
    """The sorted sample indices of one named part of [`pc_split`][hmdc_modules.condensation.splits.pc_split].

    Args:
        labels: Integer class index of every sample, in dataset order.
        subset: ``"P"`` (pretraining half), ``"C"`` (condensation half) or ``"all"`` (every index).
        seed: The split's seed.
        fraction: Share of each class in ``P``.

    Returns:
        Sorted ``int64`` positions into ``labels``.

    Raises:
        ValueError: If ``subset`` is not one of ``"P"``, ``"C"``, ``"all"`` (and as
            [`pc_split`][hmdc_modules.condensation.splits.pc_split]).
        TypeError: As [`pc_split`][hmdc_modules.condensation.splits.pc_split].

    Examples:
        >>> labels = torch.arange(10).repeat(4)  # 10 classes, 4 samples each
        >>> c = subset_indices(labels, "C")
        >>> len(c), labels[c].bincount().tolist() == [2] * 10
        (20, True)
    """
    check_choice("subset", subset, SPLIT_SUBSETS)
    if subset == "all":
        return torch.arange(_check_labels(labels).numel())
    p, c = pc_split(labels, seed=seed, fraction=fraction)
    return p if subset == "P" else c

"""Tests for hmdc_modules.condensation.splits: the protocol-v2 P/C split."""

from __future__ import annotations

import pytest
import torch

from hmdc_modules.condensation.splits import PC_SPLIT_SEED, pc_split, subset_indices


def _cifar_like_labels(interleaved: bool = True) -> torch.Tensor:
    """50,000 labels, 5,000 per class: interleaved like the pickled batches, or class-major like image folders."""
    labels = torch.arange(10).repeat(5000) if interleaved else torch.arange(10).repeat_interleave(5000)
    return labels


def test_cifar10_split_is_disjoint_covering_and_stratified() -> None:
    labels = _cifar_like_labels()
    p, c = pc_split(labels)
    assert p.dtype == c.dtype == torch.int64
    assert len(set(p.tolist()) & set(c.tolist())) == 0
    assert sorted(p.tolist() + c.tolist()) == list(range(50_000))
    assert labels[p].bincount().tolist() == [2500] * 10
    assert labels[c].bincount().tolist() == [2500] * 10
    assert torch.equal(p, p.sort().values) and torch.equal(c, c.sort().values)


def test_split_is_reproducible_and_pinned() -> None:
    labels = _cifar_like_labels()
    p1, c1 = pc_split(labels)
    p2, c2 = pc_split(labels.clone(), seed=PC_SPLIT_SEED)
    assert torch.equal(p1, p2) and torch.equal(c1, c2)
    # Pinned: protocol v2's split must never change silently (a different algorithm or seed changes these).
    assert PC_SPLIT_SEED == 20240
    assert p1[:8].tolist() == _PINNED_P_HEAD
    assert int(p1.sum()) == _PINNED_P_SUM


_PINNED_P_HEAD = [0, 2, 3, 5, 9, 11, 16, 17]
_PINNED_P_SUM = 625765130


def test_a_different_seed_gives_a_different_split() -> None:
    labels = _cifar_like_labels()
    p1, _ = pc_split(labels)
    p2, c2 = pc_split(labels, seed=PC_SPLIT_SEED + 1)
    assert not torch.equal(p1, p2)
    overlap = len(set(p1.tolist()) & set(p2.tolist())) / len(p1)
    assert 0.4 < overlap < 0.6  # independent halves share about half their members
    assert labels[p2].bincount().tolist() == [2500] * 10 and len(c2) == 25_000


def test_split_depends_on_within_class_order_not_on_interleaving() -> None:
    interleaved, class_major = _cifar_like_labels(True), _cifar_like_labels(False)
    p_i, _ = pc_split(interleaved)
    p_m, _ = pc_split(class_major)
    for cls in range(10):
        # The k-th image of class cls in each layout: same within-class ranks land in P.
        rank_i = torch.nonzero(interleaved == cls).flatten()
        rank_m = torch.nonzero(class_major == cls).flatten()
        in_p_i = torch.isin(rank_i, p_i)
        in_p_m = torch.isin(rank_m, p_m)
        assert torch.equal(in_p_i, in_p_m)


def test_odd_counts_fraction_and_subset_names() -> None:
    labels = torch.tensor([0] * 5 + [3] * 3 + [7])
    p, c = pc_split(labels, fraction=0.5)
    assert labels[p].tolist().count(0) == 3 and labels[p].tolist().count(3) == 2 and labels[p].tolist().count(7) == 1
    assert torch.equal(subset_indices(labels, "P"), p) and torch.equal(subset_indices(labels, "C"), c)
    assert subset_indices(labels, "all").tolist() == list(range(9))
    p_small, _ = pc_split(_cifar_like_labels(), fraction=0.2)
    assert len(p_small) == 10_000


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        ([0, 1], {}, TypeError, "`labels` must be a torch.Tensor"),
        (torch.tensor([0.0, 1.0]), {}, TypeError, "`labels` must be an integer tensor"),
        (torch.zeros(2, 2, dtype=torch.long), {}, ValueError, "`labels` must have 1 dimensions"),
        (torch.tensor([], dtype=torch.long), {}, ValueError, "`labels` must hold at least one label"),
        (torch.tensor([0, -1]), {}, ValueError, "non-negative"),
        (torch.tensor([0, 1]), {"seed": 1.5}, TypeError, "`seed` must be an int, got float 1.5"),
        (torch.tensor([0, 1]), {"seed": -1}, ValueError, r"`seed` must be in \[0, 2\*\*40\), got -1"),
        (torch.tensor([0, 1]), {"fraction": 1.0}, ValueError, "`fraction` must be strictly between 0 and 1, got 1.0"),
        (torch.tensor([0, 1]), {"fraction": "half"}, TypeError, "`fraction` must be a number"),
    ],
)
def test_bad_arguments(labels: object, kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        pc_split(labels, **kwargs)  # type: ignore[arg-type]


def test_bad_subset_name() -> None:
    with pytest.raises(ValueError, match="`subset` must be one of 'P', 'C', 'all', got 'D'"):
        subset_indices(torch.tensor([0, 1]), "D")  # type: ignore[arg-type]

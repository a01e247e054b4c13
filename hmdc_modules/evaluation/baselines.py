"""Baseline sets built with the library's own tools, to evaluate beside condensed ones.

[`make_random_real_set`][hmdc_modules.evaluation.baselines.make_random_real_set] is the condensation papers'
"Random" baseline: ``ipc`` real training images per class, drawn with a seed, stored like any synthetic set
(``factor=1``, no multi-formation) so the evaluation suite reads it the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from hmdc_modules._validation import check_choice, check_positive_int, check_tensor, describe

__all__ = ["make_random_real_set", "sample_per_class"]


def sample_per_class(labels: Tensor, ipc: int, *, seed: int = 0) -> Tensor:
    """Draw ``ipc`` distinct indices of each class present in ``labels``, reproducibly from ``seed``.

    Classes are visited in increasing order; each one's indices are a prefix of a random permutation of its
    members (a private generator seeded with ``seed``, drawn class after class), kept in drawing order.

    Args:
        labels: Integer class labels.
        ipc: Indices per class ($\\ge 1$).
        seed: Seed of the draw ($\\ge 0$).

    Returns:
        ``int64`` indices into ``labels``, class by class: $(K \\cdot \\mathrm{ipc})$ for $K$ classes.

    Raises:
        TypeError: If ``labels`` is not an integer tensor or ``ipc``/``seed`` is not an int.
        ValueError: If ``labels`` is not 1-D or empty, or a class has fewer than ``ipc`` members.

    Shape:
        - labels: $(N,)$
        - output: $(K \\cdot \\mathrm{ipc},)$

    Examples:
        >>> labels = torch.tensor([0, 1, 0, 1, 0, 1])
        >>> picked = sample_per_class(labels, 2, seed=0)
        >>> labels[picked].tolist()
        [0, 0, 1, 1]
        >>> torch.equal(picked, sample_per_class(labels, 2, seed=0))
        True
    """
    check_tensor("labels", labels, ndim=1, nonempty=True)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"`labels` must have an integer dtype, got {labels.dtype}")
    check_positive_int("ipc", ipc)
    check_positive_int("seed", seed, minimum=0)
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for c in sorted(int(v) for v in labels.unique()):
        members = torch.nonzero(labels == c).flatten()
        if members.numel() < ipc:
            raise ValueError(f"`ipc`={ipc} exceeds the {members.numel()} images of class {c}")
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:ipc]])
    return torch.cat(chosen)


def make_random_real_set(
    data_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    ipc: int = 1,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    subset: str = "all",
) -> Path:
    """Write the "Random" baseline: ``ipc`` real CIFAR-10 training images per class, drawn with ``seed``.

    The training split is read with [`load_cifar10`][hmdc_modules.condensation.datasets.load_cifar10], the images are
    drawn with [`sample_per_class`][hmdc_modules.evaluation.baselines.sample_per_class], normalised with
    CIFAR-10's mean and std and saved with
    [`save_synthetic_set`][hmdc_modules.condensation.synthetic.save_synthetic_set] (``factor=1``, ``iteration=0``;
    ``extra`` records ``baseline="random_real"``, ``seed``, ``subset`` and the drawn ``source_indices`` into the
    training split of the listed ``classes``).

    Args:
        data_root: The CIFAR-10 folder.
        out: A run folder (the set goes to ``out/synthetic.pt``, so the folder can be passed to the evaluation as
            it is) or a file path ending in ``.pt``/``.pth``.
        ipc: Real images per class.
        seed: Seed of the draw: the same seed draws the same images.
        classes: Class indices to include (``None``: all ten).
        progress: Show a progress bar while decoding image folders.
        overwrite: Replace a set file that already exists at the destination (``False``: refuse, so a condensed
            set in a run folder is never replaced by mistake).
        subset: Draw from ``"all"`` of the training split, or from its ``"C"`` or ``"P"`` half
            ([`pc_split`][hmdc_modules.condensation.splits.pc_split]; protocol v2 draws from ``C``).

    Returns:
        The path of the written set file.

    Raises:
        FileNotFoundError: If the data is missing (the message says where it looked and how to get it).
        TypeError: If an argument has the wrong type.
        ValueError: If ``ipc`` or ``seed`` is out of range, a class has fewer than ``ipc`` images, ``subset`` is
            unknown, or the destination file exists and ``overwrite`` is false.

    Examples:
        >>> path = make_random_real_set("data/cifar10", "runs/random_ipc1", ipc=1, seed=0)  # doctest: +SKIP
        >>> str(path)  # doctest: +SKIP
        'runs/random_ipc1/synthetic.pt'
    """
    from hmdc_modules.condensation import CIFAR10_MEAN, CIFAR10_STD, load_cifar10, normalize, save_synthetic_set
    from hmdc_modules.condensation.splits import SPLIT_SUBSETS, subset_indices

    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"`out` must be a str or path, got {describe(out)}")
    check_positive_int("ipc", ipc)
    check_positive_int("seed", seed, minimum=0)
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be a bool, got {describe(overwrite)}")
    check_choice("subset", subset, SPLIT_SUBSETS)
    target = Path(out)
    if target.suffix not in (".pt", ".pth"):
        target = target / "synthetic.pt"
    if target.exists() and not overwrite:
        raise ValueError(f"`out`: '{target}' already exists; choose another --out, or pass --overwrite to replace it")
    if target.parent.exists() and not target.parent.is_dir():
        raise ValueError(f"`out`: '{target.parent}' is a file, expected a folder")
    images, labels = load_cifar10(data_root, "train", progress=progress, classes=classes)
    allowed = subset_indices(labels, subset)  # type: ignore[arg-type]  # each class is cut on its own
    picked = allowed[sample_per_class(labels[allowed], ipc, seed=seed)]
    save_synthetic_set(
        target,
        normalize(images[picked], CIFAR10_MEAN, CIFAR10_STD),
        labels[picked],
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        factor=1,
        ipc=ipc,
        iteration=0,
        extra={"baseline": "random_real", "seed": seed, "subset": subset, "source_indices": picked.tolist()},
    )
    return target

"""Figures a condensation run writes: the image grid and the gradient-balancer plot (the paper's Figure 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hmdc_modules._validation import check_tensor

__all__ = ["plot_balancer_history", "plot_metrics", "save_image_grid"]


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported lazily: no import side effects)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: str | Path, title: str) -> Path:
    """Title, lay out and write ``fig`` as a PNG (creating the folder), then close it."""
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def save_image_grid(
    images: Tensor,
    path: str | Path,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    nrow: int | None = None,
    scale: int = 1,
) -> Path:
    """Save synthetic images as one PNG grid, one row per class.

    Args:
        images: Images in normalised space (``mean``/``std`` given) or in $[0, 1]$. A 5-D tensor is read as
            ``[classes, images_per_class, C, H, W]`` and laid out one row per class.
        path: Destination PNG file.
        mean: Channel means used to normalise the images, to undo before saving.
        std: Channel standard deviations used to normalise the images.
        nrow: Images per row for 4-D input (default: all in one row).
        scale: Integer upscaling factor (nearest neighbour) so small images stay visible.

    Returns:
        The destination path.

    Shape:
        - images: $(K, N, C, H, W)$ or $(B, C, H, W)$
    """
    from torchvision.utils import save_image

    check_tensor("images", images, ndim=(4, 5), floating=True, nonempty=True)
    x = images.detach().float().cpu()
    if x.ndim == 5:
        nrow = x.shape[1]
        x = x.reshape(-1, *x.shape[2:])
    if (mean is None) != (std is None):
        raise ValueError("`mean` and `std` must be given together")
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
        x = x * s + m
    if scale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(x.clamp(0, 1), path, nrow=nrow or x.shape[0], padding=2, pad_value=1.0)
    return path


def plot_balancer_history(
    history: Mapping[str, Tensor],
    path: str | Path,
    *,
    loss_names: Sequence[str] | None = None,
    title: str = "Gradient balancing",
) -> Path:
    """Plot each loss's sampled image-gradient magnitude and its weight over sampling rounds (the paper's Figure 4).

    A balancer samples every group (e.g. class) on its own calls, so the records of one round carry different
    global steps. The x axis is therefore the *round*: the $r$-th sampling call of each group, and each curve is the
    mean over groups of that round's values (the groups of a condensation step are sampled in the same round).
    Both axes are logarithmic in $y$: magnitudes and weights both span orders of magnitude.

    Args:
        history: What ``GradientBalancer.history_arrays()`` returns: ``"group"`` $(N)$, ``"magnitudes"``
            $(N, K)$, ``"weights"`` $(N, K)$, in call order.
        path: Destination PNG file.
        loss_names: Legend names of the $K$ losses.
        title: Figure title.

    Returns:
        The destination path.

    Raises:
        ValueError: If ``history`` lacks one of the keys above.
    """
    plt = _pyplot()

    for key in ("group", "magnitudes", "weights"):
        if key not in history:
            raise ValueError(f"`history` must hold key {key!r}, got keys {sorted(history)}")
    groups = history["group"].long()
    magnitudes = history["magnitudes"].double()
    weights = history["weights"].double()
    k = magnitudes.shape[1] if magnitudes.ndim == 2 else 0
    names = list(loss_names) if loss_names is not None else [f"loss {i}" for i in range(k)]
    # round index of each record: how many earlier records its group has
    rounds = torch.zeros_like(groups)
    seen: dict[int, int] = {}
    for i, g in enumerate(groups.tolist()):
        rounds[i] = seen.get(g, 0)
        seen[g] = int(rounds[i]) + 1
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if groups.numel() and k:
        unique = torch.unique(rounds)
        for i in range(k):
            mean_mag = torch.stack([magnitudes[rounds == r, i].mean() for r in unique])
            mean_w = torch.stack([weights[rounds == r, i].mean() for r in unique])
            axes[0].plot(unique.numpy(), mean_mag.numpy(), marker=".", label=names[i])
            axes[1].plot(unique.numpy(), mean_w.numpy(), marker=".", label=names[i])
        for ax in axes:
            ax.set_yscale("log")
            ax.legend()
    axes[0].set_title("sampled image-gradient magnitude")
    axes[1].set_title("balancing weight")
    for ax in axes:
        ax.set_xlabel("sampling round (mean over groups)")
        ax.grid(alpha=0.3)
    return _save_figure(fig, path, title)


def plot_metrics(
    metrics_csv: str | Path,
    path: str | Path,
    *,
    columns: Sequence[str],
    x: str = "global_step",
    title: str = "Losses",
) -> Path:
    """Plot columns of a run's ``metrics.csv`` against a step column, one panel per column, log-scaled $y$.

    Args:
        metrics_csv: A CSV file with a header row, e.g. the ``metrics.csv`` the reference example writes.
        path: Destination PNG file.
        columns: The columns to plot.
        x: The column used as the $x$ axis.
        title: Figure title.

    Returns:
        The destination path.

    Raises:
        FileNotFoundError: If ``metrics_csv`` does not exist.
        ValueError: If ``columns`` is empty or names a column the file lacks.
    """
    import csv

    plt = _pyplot()

    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"`metrics_csv`: no file at {str(metrics_csv)!r}")
    if not columns:
        raise ValueError("`columns` must name at least one column, got none")
    with metrics_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    available = list(rows[0]) if rows else []
    for name in (x, *columns):
        if rows and name not in available:
            raise ValueError(f"`columns`: {name!r} is not a column of {metrics_csv.name}; it has {available}")
    fig, axes = plt.subplots(1, len(columns), figsize=(3.4 * len(columns), 3.2), squeeze=False)
    steps = [float(r[x]) for r in rows]
    for ax, name in zip(axes[0], columns, strict=True):
        values = [float(r[name]) for r in rows]
        ax.plot(steps, values, marker=".")
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    return _save_figure(fig, path, title)

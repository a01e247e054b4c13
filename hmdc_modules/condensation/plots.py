"""Figures a condensation run writes: the image grid, the gradient-balancer plot (the paper's Figure 4), the losses.

Plots are drawn on a ``matplotlib.figure.Figure`` and written by
[`save_figure`][hmdc_modules.condensation.io.save_figure] (an Agg canvas, no global backend, atomic write); the image
grid is composed with Pillow and written atomically too. Integer axes (sampling rounds, steps) get integer ticks.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hmdc_modules._validation import check_positive_int, check_tensor, describe
from hmdc_modules.condensation.io import atomic_write_bytes, save_figure

__all__ = ["plot_balancer_history", "plot_metrics", "save_image_grid"]

_PADDING = 2
_LABEL_GAP = 6


def _check_path(path: Any) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a str or path, got {describe(path)}")
    return Path(path)


def _check_stats(mean: Any, std: Any, channels: int) -> None:
    if (mean is None) != (std is None):
        raise ValueError("`mean` and `std` must be given together")
    for name, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        if isinstance(values, str | bytes) or not isinstance(values, Sequence | Tensor):
            raise TypeError(f"`{name}` must be a sequence of {channels} numbers, got {describe(values)}")
        if len(values) != channels:
            raise ValueError(f"`{name}` must hold one number per channel ({channels}), got {list(values)!r}")


def _grid_rows(x: Tensor, nrow: int) -> Tensor:
    """Lay ``x`` (B, C, H, W) out ``nrow`` per row with white padding: (C, rows * (H + p) + p, ...)."""
    from torchvision.utils import make_grid

    return make_grid(x, nrow=nrow, padding=_PADDING, pad_value=1.0)


def _label_rows(grid, class_names: Sequence[str], row_height: int):  # PIL images in and out
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(int(measure.textbbox((0, 0), name, font=font)[2]) for name in class_names) + 2 * _LABEL_GAP
    labelled = Image.new("RGB", (width + grid.width, grid.height), "white")
    labelled.paste(grid, (width, 0))
    draw = ImageDraw.Draw(labelled)
    for row, name in enumerate(class_names):
        middle = _PADDING + row * (row_height + _PADDING) + row_height / 2
        draw.text((width - _LABEL_GAP, middle), name, fill="black", font=font, anchor="rm")
    return labelled


def save_image_grid(
    images: Tensor,
    path: str | os.PathLike[str],
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    nrow: int | None = None,
    scale: int = 1,
    factor: int = 1,
    class_names: Sequence[str] | None = None,
    min_size: int = 32,
) -> Path:
    """Save synthetic images as one PNG grid, one row per class, optionally labelled with class names.

    With ``factor`` $f > 1$ the images are multi-formation packed: each stored image is decoded into its $f^2$
    training images ([`decode_formation`][hmdc_modules.condensation.formation.decode_formation], every tile resized
    back to the stored size), and decoded images smaller than ``min_size`` pixels are enlarged (nearest neighbour,
    integer factor) so that each is at least ``min_size`` pixels on its shorter side.

    Args:
        images: Images in normalised space (``mean``/``std`` given) or in $[0, 1]$. A 5-D tensor is read as
            ``[classes, images_per_class, C, H, W]`` and laid out one row per class.
        path: Destination PNG file (written atomically).
        mean: Channel means used to normalise the images, to undo before saving.
        std: Channel standard deviations used to normalise the images.
        nrow: Images per row for 4-D input (default: all in one row).
        scale: Integer upscaling factor (nearest neighbour) applied on top, so small images stay visible.
        factor: Multi-formation factor of ``images`` (1: not packed).
        class_names: One label per grid row, drawn to the left of the row.
        min_size: Smallest side, in pixels, of a decoded image when ``factor > 1``.

    Returns:
        The destination path.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``images`` is not 4-D or 5-D, empty or not floating, ``mean`` is given without ``std`` (or
            either has the wrong length), the image size is not divisible by ``factor``, or ``class_names`` does not
            hold one name per row.

    Shape:
        - images: $(K, N, C, H, W)$ or $(B, C, H, W)$

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> packed = torch.rand(2, 1, 3, 16, 16)  # 2 classes, 1 stored image each, 2 x 2 tiles of 8 px
        >>> path = save_image_grid(packed, pathlib.Path(tempfile.mkdtemp()) / "grid.png", factor=2,
        ...                        class_names=["cat", "dog"])
        >>> Image.open(path).height  # 2 rows of 32 px decoded images, 2 px padding
        70
    """
    from PIL import Image

    from hmdc_modules.condensation.formation import decode_formation

    check_tensor("images", images, ndim=(4, 5), floating=True, nonempty=True)
    path = _check_path(path)
    check_positive_int("scale", scale)
    check_positive_int("factor", factor)
    check_positive_int("min_size", min_size)
    if nrow is not None:
        check_positive_int("nrow", nrow)
    x = images.detach().float().cpu()
    _check_stats(mean, std, x.shape[-3])
    classes = x.shape[0] if x.ndim == 5 else None
    flat = x.reshape(-1, *x.shape[-3:])
    if factor > 1:
        height, width = flat.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(
                f"`images` height and width must be divisible by `factor`={factor}, got ({height}, {width})"
            )
        per_stored = flat.reshape(classes or 1, -1, *flat.shape[1:])
        # decode class by class so that each row holds one class's decoded images
        flat = torch.cat([decode_formation(row, factor) for row in per_stored])
        scale *= max(1, math.ceil(min_size / min(height, width)))
    if classes is not None:
        nrow = flat.shape[0] // classes
    nrow = nrow or flat.shape[0]
    rows = math.ceil(flat.shape[0] / nrow)
    if class_names is not None:
        if isinstance(class_names, str) or not isinstance(class_names, Sequence):
            raise TypeError(f"`class_names` must be a sequence of str, got {describe(class_names)}")
        if len(class_names) != rows or not all(isinstance(n, str) for n in class_names):
            raise ValueError(f"`class_names` must hold one str per grid row ({rows}), got {list(class_names)!r}")
    if mean is not None and std is not None:
        m = torch.as_tensor(mean, dtype=flat.dtype).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=flat.dtype).view(1, -1, 1, 1)
        flat = flat * s + m
    if scale > 1:
        flat = torch.nn.functional.interpolate(flat, scale_factor=scale, mode="nearest")
    grid = _grid_rows(flat.clamp(0, 1), nrow)
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels if pixels.shape[2] != 1 else pixels[:, :, 0])
    if class_names is not None:
        picture = _label_rows(picture.convert("RGB"), class_names, flat.shape[-2])
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def plot_balancer_history(
    history: Mapping[str, Tensor],
    path: str | os.PathLike[str],
    *,
    loss_names: Sequence[str] | None = None,
    title: str = "Gradient balancing",
) -> Path:
    """Plot each loss's sampled image-gradient magnitude and its weight over sampling rounds (the paper's Figure 4).

    A balancer samples every group (e.g. class) on its own calls, so the records of one round carry different
    global steps. The x axis is therefore the *round*: the $r$-th sampling call of each group (integer ticks), and
    each curve is the mean over groups of that round's values (the groups of a condensation step are sampled in the
    same round). Both panels have a logarithmic $y$ axis: magnitudes and weights both span orders of magnitude.

    Args:
        history: What ``GradientBalancer.history_arrays()`` returns: ``"group"`` $(N)$, ``"magnitudes"``
            $(N, K)$, ``"weights"`` $(N, K)$, in call order.
        path: Destination PNG file (written atomically).
        loss_names: Legend names of the $K$ losses.
        title: Figure title.

    Returns:
        The destination path.

    Raises:
        TypeError: If ``history`` is not a mapping of tensors.
        ValueError: If ``history`` lacks one of the keys above, or ``loss_names`` does not have $K$ entries.

    Examples:
        >>> import tempfile, pathlib
        >>> history = {"group": torch.tensor([0, 1, 0, 1]), "magnitudes": torch.rand(4, 2) + 0.1,
        ...            "weights": torch.rand(4, 2) + 0.1}
        >>> plot_balancer_history(history, pathlib.Path(tempfile.mkdtemp()) / "b.png").suffix
        '.png'
    """
    from matplotlib.figure import Figure

    if not isinstance(history, Mapping):
        raise TypeError(
            f"`history` must be a dict of tensors (GradientBalancer.history_arrays()), got {describe(history)}"
        )
    for key in ("group", "magnitudes", "weights"):
        if key not in history:
            raise ValueError(f"`history` must hold key {key!r}, got keys {sorted(history)}")
        check_tensor(f"history[{key!r}]", history[key])
    path = _check_path(path)
    groups = history["group"].long()
    magnitudes = history["magnitudes"].double()
    weights = history["weights"].double()
    k = magnitudes.shape[1] if magnitudes.ndim == 2 else 0
    names = list(loss_names) if loss_names is not None else [f"loss {i}" for i in range(k)]
    if len(names) != k and groups.numel():
        raise ValueError(f"`loss_names` must hold one name per loss ({k}), got {names!r}")
    # round index of each record: how many earlier records its group has
    rounds = torch.zeros_like(groups)
    seen: dict[int, int] = {}
    for i, g in enumerate(groups.tolist()):
        rounds[i] = seen.get(g, 0)
        seen[g] = int(rounds[i]) + 1
    figure = Figure(figsize=(10, 3.6))
    axes = figure.subplots(1, 2)
    if groups.numel() and k:
        unique = torch.unique(rounds)
        for i in range(k):
            mean_mag = torch.stack([magnitudes[rounds == r, i].mean() for r in unique])
            mean_w = torch.stack([weights[rounds == r, i].mean() for r in unique])
            axes[0].plot(unique.numpy(), mean_mag.numpy(), marker=".", label=names[i])
            axes[1].plot(unique.numpy(), mean_w.numpy(), marker=".", label=names[i])
        for ax in axes:
            ax.legend()
    axes[0].set_title("sampled image-gradient magnitude")
    axes[1].set_title("balancing weight")
    for ax in axes:
        ax.set_yscale("log")
        _integer_ticks(ax.xaxis)
        ax.set_xlabel("sampling round (mean over groups)")
        ax.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path, dpi=100)


def plot_metrics(
    metrics_csv: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str],
    x: str = "global_step",
    title: str = "Losses",
) -> Path:
    """Plot columns of a run's ``metrics.csv`` against a step column, one panel per column, log-scaled $y$.

    When every value of the ``x`` column is an integer (steps, iterations), the $x$ axis gets integer ticks.

    Args:
        metrics_csv: A CSV file with a header row, e.g. the ``metrics.csv`` the condensation example writes.
        path: Destination PNG file (written atomically).
        columns: The columns to plot.
        x: The column used as the $x$ axis.
        title: Figure title.

    Returns:
        The destination path.

    Raises:
        FileNotFoundError: If ``metrics_csv`` does not exist.
        ValueError: If ``columns`` is empty, names a column the file lacks, or a value is not a number.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "metrics.csv").write_text("global_step,loss\\n0,2.0\\n1,1.0\\n")
        >>> plot_metrics(folder / "metrics.csv", folder / "losses.png", columns=["loss"]).name
        'losses.png'
    """
    import csv

    from matplotlib.figure import Figure

    metrics_csv = _check_path(metrics_csv)
    path = _check_path(path)
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"`metrics_csv`: no file at {str(metrics_csv)!r}")
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise TypeError(f"`columns` must be a list of column names, got {describe(columns)}")
    if not columns:
        raise ValueError("`columns` must name at least one column, got none")
    with metrics_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    available = list(rows[0]) if rows else []
    for name in (x, *columns):
        if rows and name not in available:
            raise ValueError(f"`columns`: {name!r} is not a column of {metrics_csv.name}; it has {available}")

    def numbers(name: str) -> list[float]:
        try:
            return [float(r[name]) for r in rows]
        except (TypeError, ValueError):
            raise ValueError(
                f"`metrics_csv`: column {name!r} of {metrics_csv.name} holds a value that is not a number"
            ) from None

    steps = numbers(x)
    integer_steps = all(float(s).is_integer() for s in steps)
    figure = Figure(figsize=(3.4 * len(columns), 3.2))
    axes = figure.subplots(1, len(columns), squeeze=False)
    for ax, name in zip(axes[0], columns, strict=True):
        values = numbers(name)
        ax.plot(steps, values, marker=".")
        if values and min(values) > 0:
            ax.set_yscale("log")
        if integer_steps:
            _integer_ticks(ax.xaxis)
        ax.set_title(name)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path, dpi=100)

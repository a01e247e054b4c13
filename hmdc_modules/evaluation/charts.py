"""A grouped bar chart comparing several condensed sets across the architectures of an evaluation."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hmdc_modules.evaluation.tables import AVERAGE_LABELS, METRICS, SummaryRow, _check_rows

__all__ = ["plot_accuracy_bars"]


def plot_accuracy_bars(
    rows: Iterable[SummaryRow],
    path: str | os.PathLike[str],
    *,
    title: str = "Cross-architecture evaluation",
    metrics: tuple[str, ...] = ("best", "final"),
) -> Path:
    """Draw one panel per metric: a group of bars per model (and per average), one bar per set, side by side.

    Bars show the mean accuracy over seeds, with the sample standard deviation as an error bar where there is one.
    The figure is drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global backend change).

    Args:
        rows: What [`summarize`][hmdc_modules.evaluation.tables.summarize] returns.
        path: Destination PNG file (its folder is created).
        title: The figure's title.
        metrics: The panels, from ``"best"`` and ``"final"``.

    Returns:
        The path written.

    Raises:
        TypeError: If ``rows`` does not hold ``SummaryRow`` objects.
        ValueError: If ``rows`` is empty or ``metrics`` is empty or names an unknown metric.

    Examples:
        >>> import tempfile, pathlib
        >>> rows = [SummaryRow("a", "convnet", "model", "cnn", 1, 2, 1, 48.0, 1.0, 50.0, 2.0),
        ...         SummaryRow("b", "convnet", "model", "cnn", 1, 1, 1, 40.0, None, 41.0, None)]
        >>> plot_accuracy_bars(rows, pathlib.Path(tempfile.mkdtemp()) / "bars.png").name
        'bars.png'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = _check_rows(rows)
    if not items:
        raise ValueError("`rows` must hold at least one SummaryRow, got none")
    if isinstance(metrics, str) or not metrics or any(m not in METRICS for m in metrics):
        raise ValueError(f"`metrics` must be a non-empty tuple of {tuple(METRICS)}, got {metrics!r}")
    sets = list(dict.fromkeys(r.set_name for r in items))
    models = list(dict.fromkeys(r.model for r in items if r.kind == "model"))
    models += [label for label in AVERAGE_LABELS.values() if any(r.model == label for r in items)]
    lookup = {(r.set_name, r.model): r for r in items}

    width = min(0.8 / len(sets), 0.35)
    figure = Figure(figsize=(max(6.0, 1.0 + len(models) * (0.5 + 0.35 * len(sets))), 3.2 * len(metrics)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(metrics), 1, squeeze=False)[:, 0]
    for ax, metric in zip(axes, metrics, strict=True):
        top = 0.0
        for i, set_name in enumerate(sets):
            xs, heights, errors = [], [], []
            for j, model in enumerate(models):
                row = lookup.get((set_name, model))
                if row is None:
                    continue
                xs.append(j + (i - (len(sets) - 1) / 2) * width)
                heights.append(getattr(row, f"{metric}_mean"))
                errors.append(getattr(row, f"{metric}_std"))
            ax.bar(xs, heights, width=width, label=set_name)
            spread = [(x, h, e) for x, h, e in zip(xs, heights, errors, strict=True) if e is not None]
            if spread:  # no error bar where the standard deviation is undefined (one seed, averages)
                ax.errorbar(*zip(*spread, strict=True), fmt="none", ecolor="black", elinewidth=1, capsize=2)
            top = max([top, *(h + (e or 0.0) for h, e in zip(heights, errors, strict=True))])
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(METRICS[metric], fontsize=9)
        ax.set_ylim(0, max(1.0, top) * 1.25)  # headroom for the legend
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", ncol=min(len(sets), 4))
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path

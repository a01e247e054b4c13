"""A grouped bar chart comparing several condensed sets across the architectures of an evaluation."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from hmdc_modules.condensation import save_figure
from hmdc_modules.evaluation.tables import AVERAGE_LABELS, METRICS, SummaryRow, check_rows

__all__ = ["plot_accuracy_bars"]

_SAME_TITLE = "Test accuracy (%) after the last epoch (equal to the best over the evaluations)"


def _panels(items: Sequence[SummaryRow], metrics: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(metric, title)`` of each panel; one panel where every best equals its final accuracy."""
    same = all(r.best_mean == r.final_mean and r.best_std == r.final_std for r in items)
    if same and set(metrics) == set(METRICS):
        return [("final", _SAME_TITLE)]
    return [(metric, METRICS[metric]) for metric in metrics]


def plot_accuracy_bars(
    rows: Iterable[SummaryRow],
    path: str | os.PathLike[str],
    *,
    title: str = "Cross-architecture evaluation",
    metrics: tuple[str, ...] = ("best", "final"),
) -> Path:
    """Draw one panel per metric: a group of bars per model (and per average), one bar per set, side by side.

    Bars show the mean accuracy over seeds, with the sample standard deviation as an error bar where there is one.
    When every row's best accuracy equals its final one (tested only after the last epoch, say), the two panels
    would be identical, and one panel is drawn instead. The best-accuracy panel's title says that the metric picks
    the epoch on the test set. The figure is written with
    [`save_figure`][hmdc_modules.condensation.io.save_figure] (an Agg canvas, written atomically).

    Args:
        rows: What [`summarize`][hmdc_modules.evaluation.tables.summarize] returns.
        path: Destination PNG file (its folder is created).
        title: The figure's title.
        metrics: The panels, from ``"best"`` and ``"final"``.

    Returns:
        The path written.

    Raises:
        TypeError: If ``rows`` does not hold ``SummaryRow`` objects or ``path`` is not a path.
        ValueError: If ``rows`` is empty or ``metrics`` is empty or names an unknown metric.

    Examples:
        >>> import tempfile, pathlib
        >>> rows = [SummaryRow("a", "convnet", "model", "cnn", 1, 2, 1, 48.0, 1.0, 50.0, 2.0),
        ...         SummaryRow("b", "convnet", "model", "cnn", 1, 1, 1, 40.0, None, 41.0, None)]
        >>> plot_accuracy_bars(rows, pathlib.Path(tempfile.mkdtemp()) / "bars.png").name
        'bars.png'
    """
    from matplotlib.figure import Figure

    items = check_rows(rows)
    if not items:
        raise ValueError("`rows` must hold at least one SummaryRow, got none")
    if not isinstance(metrics, tuple) or not metrics or any(m not in METRICS for m in metrics):
        raise ValueError(f"`metrics` must be a non-empty tuple of {tuple(METRICS)}, got {metrics!r}")
    sets = list(dict.fromkeys(r.set_name for r in items))
    models = list(dict.fromkeys(r.model for r in items if r.kind == "model"))
    models += [label for label in AVERAGE_LABELS.values() if any(r.model == label for r in items)]
    lookup = {(r.set_name, r.model): r for r in items}
    panels = _panels(items, metrics)

    width = min(0.8 / len(sets), 0.35)
    size = (max(6.0, 1.0 + len(models) * (0.5 + 0.35 * len(sets))), 0.6 + 3.2 * len(panels))
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (metric, panel_title) in zip(axes, panels, strict=True):
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
        ax.set_title(panel_title, fontsize=9)
        ax.set_ylim(0, max(1.0, top) * 1.25)  # headroom for the legend
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", ncol=min(len(sets), 4))
    figure.suptitle(title)
    return save_figure(figure, path)

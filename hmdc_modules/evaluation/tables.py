r"""Summaries of cell results: per (set, model) mean and standard deviation over seeds, and family averages.

For a (set, model) pair trained with seeds $s = 1, \dots, n$ and accuracies $a_s$, the table shows
$\bar a = \frac{1}{n}\sum_s a_s$ and the sample standard deviation
$\sigma = \sqrt{\frac{1}{n - 1}\sum_s (a_s - \bar a)^2}$ (``ddof = 1``). With a single seed the standard deviation
is undefined: it is ``None`` in the rows, ``n/a`` in Markdown, an empty field in CSV and ``null`` in JSON.

Sets that share a group (see [`SetSpec`][hmdc_modules.evaluation.records.SetSpec]), such as the sets one method
condensed with different seeds, are pooled into one column: the $n$ values are then every (set, seed) training of
the group, so that $\sigma$ holds the condensation's variance as well as the evaluation's.

Each set also gets three averages: over its CNNs, over its ViTs and over all its models. An average is the plain
mean of the models' seed means (every model counts once, whatever its number of seeds); it carries no standard
deviation. Both metrics are summarised side by side: the final-epoch accuracy and the best accuracy over the
periodic test evaluations. The best one is the paper's metric; it picks the epoch on the test set, so it is
optimistic.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hmdc_modules._validation import describe
from hmdc_modules.condensation import atomic_write_text
from hmdc_modules.evaluation.records import CellResult

__all__ = [
    "AVERAGE_LABELS",
    "METRICS",
    "SummaryRow",
    "format_markdown",
    "mean_std",
    "summarize",
    "write_csv",
    "write_json",
    "write_markdown",
]

METRICS: dict[str, str] = {
    "best": "Best test accuracy (%) over the periodic evaluations (the paper's metric; it picks the epoch on the "
    "test set)",
    "final": "Final-epoch test accuracy (%)",
}
"""The two reported metrics and their table titles."""

AVERAGE_LABELS: dict[str, str] = {"cnn": "CNN average", "vit": "ViT average", "all": "Overall average"}
"""The model column of the average rows, by family (``"all"``: every model)."""

_CSV_COLUMNS = (
    "set_name",
    "model",
    "kind",
    "family",
    "num_sets",
    "num_seeds",
    "num_models",
    "final_mean",
    "final_std",
    "best_mean",
    "best_std",
)


def mean_std(values: Iterable[float]) -> tuple[float, float | None]:
    r"""The mean and the sample standard deviation (``ddof = 1``) of ``values``.

    Args:
        values: At least one finite number.

    Returns:
        ``(mean, std)``; ``std`` is ``None`` for a single value (undefined with ``ddof = 1``).

    Raises:
        TypeError: If a value is not a real number.
        ValueError: If ``values`` is empty.

    Examples:
        >>> mean_std([50.0, 52.0, 57.0])  # std = sqrt((9 + 1 + 16) / 2) = sqrt(13)
        (53.0, 3.605551275463989)
        >>> mean_std([40.0])
        (40.0, None)
    """
    items = list(values)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(f"`values` must hold numbers, got {describe(v)}")
    if not items:
        raise ValueError("`values` must hold at least one number, got none")
    n = len(items)
    mean = math.fsum(items) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in items) / (n - 1))


@dataclass(frozen=True)
class SummaryRow:
    """One row of the summary: a (set, model) pair over its seeds, or one of a set's averages.

    Attributes:
        set_name: The set, or the group of sets pooled into this column.
        model: The model's display name, or an [`AVERAGE_LABELS`][hmdc_modules.evaluation.tables.AVERAGE_LABELS]
            entry for an average row.
        kind: ``"model"`` or ``"average"``.
        family: ``"cnn"`` or ``"vit"``; ``"all"`` for the overall average.
        num_sets: Sets pooled into the column (1 without groups).
        num_seeds: Trainings a model row averages: its seeds, summed over the pooled sets (``None`` for averages).
        num_models: Models an average covers (1 for a model row).
        final_mean: Mean final-epoch accuracy (%).
        final_std: Its sample standard deviation over seeds (``None``: one seed, or an average row).
        best_mean: Mean best accuracy (%).
        best_std: Its sample standard deviation over seeds (``None``: one seed, or an average row).
    """

    set_name: str
    model: str
    kind: str
    family: str
    num_sets: int
    num_seeds: int | None
    num_models: int
    final_mean: float
    final_std: float | None
    best_mean: float
    best_std: float | None

    def to_dict(self) -> dict[str, Any]:
        """The row as plain JSON values."""
        return asdict(self)


def _check_list_of(name: str, values: Any, kind: type) -> list[Any]:
    """``values`` as a list, checking that it is an iterable (not a string) of ``kind`` objects."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"`{name}` must be a list of {kind.__name__}, got {describe(values)}")
    items = list(values)
    for item in items:
        if not isinstance(item, kind):
            raise TypeError(f"`{name}` must hold {kind.__name__} objects, got {describe(item)}")
    return items


def _check_results(results: Any) -> list[CellResult]:
    return _check_list_of("results", results, CellResult)


def summarize(results: Iterable[CellResult], *, pool_groups: bool = True) -> list[SummaryRow]:
    """Summarise cell results per (set, model) and add each set's CNN, ViT and overall averages.

    Sets and models keep the order of their first appearance in ``results``. Each set's model rows come first,
    then its averages (a family average only when the set has a model of that family).

    Args:
        results: Cell results; a (set, model, seed) repeated is an error.
        pool_groups: Pool the sets of one group into one column (``True``) or give every set its own.

    Returns:
        The rows, set by set.

    Raises:
        TypeError: If ``results`` does not hold ``CellResult`` objects.
        ValueError: If ``results`` is empty or repeats a cell, or one model label stands for two different
            families.

    Examples:
        >>> from hmdc_modules.evaluation.records import CellResult
        >>> def cell(model, family, seed, best, final):
        ...     return CellResult("s", "s.pt", "", {"label": model, "family": family}, seed, [0], 1, 1, 1,
        ...                       final, best, 1, [(1, final)], 0.0, 0.0)
        >>> rows = summarize([cell("convnet", "cnn", 0, 50.0, 48.0), cell("convnet", "cnn", 1, 52.0, 50.0),
        ...                   cell("vit", "vit", 0, 30.0, 30.0)])
        >>> [(r.model, r.best_mean, r.best_std) for r in rows]  # doctest: +NORMALIZE_WHITESPACE
        [('convnet', 51.0, 1.4142135623730951), ('vit', 30.0, None), ('CNN average', 51.0, None),
         ('ViT average', 30.0, None), ('Overall average', 40.5, None)]
    """
    if not isinstance(pool_groups, bool):
        raise TypeError(f"`pool_groups` must be a bool, got {describe(pool_groups)}")
    items = _check_results(results)
    if not items:
        raise ValueError("`results` must hold at least one CellResult, got none")
    seen: set[tuple[str, str, int]] = set()
    groups: dict[str, dict[str, list[CellResult]]] = {}
    families: dict[str, str] = {}
    for item in items:
        key = (item.set_name, item.model_label, item.seed)
        if key in seen:
            raise ValueError(f"`results` repeats the cell set={key[0]!r}, model={key[1]!r}, seed={key[2]}")
        seen.add(key)
        if families.setdefault(item.model_label, item.family) != item.family:
            raise ValueError(
                f"`results`: model {item.model_label!r} is labelled both {families[item.model_label]!r} and "
                f"{item.family!r}"
            )
        column = item.group if pool_groups else item.set_name
        groups.setdefault(column, {}).setdefault(item.model_label, []).append(item)

    rows: list[SummaryRow] = []
    for set_name, by_model in groups.items():
        model_rows = []
        num_sets = len({c.set_name for cells in by_model.values() for c in cells})
        for label, cells in by_model.items():
            final_mean, final_std = mean_std(c.final_accuracy for c in cells)
            best_mean, best_std = mean_std(c.best_accuracy for c in cells)
            model_rows.append(
                SummaryRow(
                    set_name,
                    label,
                    "model",
                    families[label],
                    num_sets,
                    len(cells),
                    1,
                    final_mean,
                    final_std,
                    best_mean,
                    best_std,
                )
            )
        rows.extend(model_rows)
        for family, label in AVERAGE_LABELS.items():
            members = [r for r in model_rows if family in ("all", r.family)]
            if not members:
                continue
            rows.append(
                SummaryRow(
                    set_name,
                    label,
                    "average",
                    family,
                    num_sets,
                    None,
                    len(members),
                    mean_std(r.final_mean for r in members)[0],
                    None,
                    mean_std(r.best_mean for r in members)[0],
                    None,
                )
            )
    return rows


def check_rows(rows: Any) -> list[SummaryRow]:
    """``rows`` as a list, checking that it holds ``SummaryRow`` objects (shared with the charts)."""
    return _check_list_of("rows", rows, SummaryRow)


def _cell_text(row: SummaryRow | None, metric: str, digits: int) -> str:
    if row is None:
        return "-"
    mean = getattr(row, f"{metric}_mean")
    if row.kind == "average":
        return f"**{mean:.{digits}f}**"
    std = getattr(row, f"{metric}_std")
    return f"{mean:.{digits}f} ± {'n/a' if std is None else f'{std:.{digits}f}'}"


def format_markdown(
    rows: Iterable[SummaryRow],
    *,
    title: str = "Cross-architecture evaluation",
    notes: Sequence[str] = (),
    digits: int = 2,
) -> str:
    """The summary as Markdown: one table per metric (best first), models as rows and sets as columns.

    A model cell reads ``mean ± std`` over seeds (``n/a`` for one seed); averages are bold; ``-`` marks a model
    that was not trained on a set.

    Args:
        rows: What [`summarize`][hmdc_modules.evaluation.tables.summarize] returns.
        title: The document's heading.
        notes: Lines printed under the heading (settings, seeds).
        digits: Decimals of the percentages.

    Returns:
        The Markdown text.

    Raises:
        TypeError: If ``rows`` does not hold ``SummaryRow`` objects.

    Examples:
        >>> row = SummaryRow("s", "convnet", "model", "cnn", 1, 2, 1, 48.0, 1.0, 50.0, 2.0)
        >>> print(format_markdown([row]).splitlines()[6])
        | convnet | CNN | 50.00 ± 2.00 |
    """
    items = check_rows(rows)
    sets = list(dict.fromkeys(r.set_name for r in items))
    models = list(dict.fromkeys(r.model for r in items if r.kind == "model"))
    averages = [label for family, label in AVERAGE_LABELS.items() if any(r.model == label for r in items)]
    family_of = {r.model: r.family for r in items}
    lookup = {(r.set_name, r.model): r for r in items}
    lines = [f"# {title}", ""]
    if notes:
        lines += [*notes, ""]
    for metric, heading in METRICS.items():
        lines += [f"## {heading}", ""]
        lines.append("| model | family | " + " | ".join(sets) + " |")
        lines.append("| --- | --- | " + " | ".join("---:" for _ in sets) + " |")
        for label in [*models, *averages]:
            family = {"cnn": "CNN", "vit": "ViT", "all": "all"}[family_of[label]]
            name = f"**{label}**" if label in averages else label
            cells = [_cell_text(lookup.get((s, label)), metric, digits) for s in sets]
            lines.append(f"| {name} | {family} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_markdown(rows: Iterable[SummaryRow], path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write [`format_markdown`][hmdc_modules.evaluation.tables.format_markdown] to ``path`` atomically.

    Args:
        rows: The summary rows.
        path: Destination ``.md`` file.
        **kwargs: Passed to ``format_markdown``.

    Returns:
        The path written.
    """
    return atomic_write_text(path, format_markdown(rows, **kwargs))


def write_csv(rows: Iterable[SummaryRow], path: str | os.PathLike[str]) -> Path:
    """Write the summary rows as CSV (one row per model and per average; an empty field for ``None``).

    Columns: ``set_name, model, kind, family, num_seeds, num_models, final_mean, final_std, best_mean, best_std``.

    Args:
        rows: The summary rows.
        path: Destination ``.csv`` file, written atomically.

    Returns:
        The path written.
    """
    items = check_rows(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in items:
        writer.writerow({k: ("" if v is None else v) for k, v in row.to_dict().items()})
    return atomic_write_text(path, buffer.getvalue())


def write_json(
    rows: Iterable[SummaryRow],
    results: Iterable[CellResult],
    path: str | os.PathLike[str],
    *,
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """Write the summary, the per-cell records and the settings as one JSON document (``null`` for ``None``).

    Keys: ``format`` (``"hmdc_modules.evaluation"``), ``version`` (1), ``settings``, ``summary`` (the rows) and
    ``cells`` (every [`CellResult`][hmdc_modules.evaluation.records.CellResult], with its test history).

    Args:
        rows: The summary rows.
        results: The cell results they summarise.
        path: Destination ``.json`` file, written atomically.
        settings: The evaluation settings, as a dict.

    Returns:
        The path written.
    """
    document = {
        "format": "hmdc_modules.evaluation",
        "version": 1,
        "settings": dict(settings or {}),
        "summary": [r.to_dict() for r in check_rows(rows)],
        "cells": [c.to_dict() for c in _check_results(results)],
    }
    return atomic_write_text(path, json.dumps(document, indent=2, allow_nan=True) + "\n")

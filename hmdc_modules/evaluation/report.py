"""The reports of an evaluation folder: Markdown, CSV and JSON tables and a bar chart over every cell record.

[`write_reports`][hmdc_modules.evaluation.report.write_reports] writes, into the output folder,

- ``results.md``, ``results.csv``, ``results.json``: the summary
  ([`summarize`][hmdc_modules.evaluation.tables.summarize]), one column per set or group of sets;
- ``results_by_set.md``: when a group pools several sets, the same tables with one column per set;
- ``accuracy.png``: the bar chart ([`plot_accuracy_bars`][hmdc_modules.evaluation.charts.plot_accuracy_bars]).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hmdc_modules._validation import describe
from hmdc_modules.evaluation.charts import plot_accuracy_bars
from hmdc_modules.evaluation.records import CellResult, EvalSettings
from hmdc_modules.evaluation.tables import SummaryRow, summarize, write_csv, write_json, write_markdown

__all__ = ["write_reports"]

_ARITHMETIC = {"bf16": "forward passes under bfloat16 autocast", "tf32": "TensorFloat-32 matmuls and convolutions"}
"""How the protocol sentence names a precision other than fp32."""


def _notes(results: Sequence[CellResult], rows: Sequence[SummaryRow], settings: EvalSettings | None) -> list[str]:
    """The lines under the Markdown heading: the protocol (and its precision when not fp32), the seeds, what a
    table entry is."""
    seeds = ", ".join(map(str, sorted({r.seed for r in results})))
    notes = []
    if settings is not None:
        every = f"every {settings.eval_every} epochs and " if settings.eval_every else ""
        rate = "per-model learning rates" if settings.lr is None else f"learning rate {settings.lr}"
        schedule = "" if settings.lr_schedule == "constant" else f" x{settings.lr_decay} ({settings.lr_schedule})"
        arithmetic = ""
        if settings.precision != "fp32":
            arithmetic = f", precision {settings.precision}: {_ARITHMETIC[settings.precision]}"
        notes.append(
            f"Evaluation protocol {settings.protocol}: each model trained {settings.epochs} epochs on the set (SGD, "
            f"{rate}{schedule}, momentum {settings.momentum}, weight decay {settings.weight_decay}, batch "
            f"{settings.batch_size}, augmentation {settings.augment}, cutmix p {settings.cutmix_p} for "
            f"CNNs{arithmetic}), tested {every}after the last epoch. The protocol reports the {settings.metric} "
            "accuracy; the best one selects the epoch on the test set."
        )
    pooled = any(r.num_sets > 1 for r in rows)
    spread = "every seed of every set in the column's group" if pooled else "seeds"
    notes.append(
        f"Training seeds {seeds}: each cell is mean ± sample standard deviation over {spread} "
        "(ddof = 1; n/a with one value). Averages (bold) are means of the models' means."
    )
    return notes


def write_reports(
    results: Sequence[CellResult],
    out: str | os.PathLike[str],
    *,
    settings: EvalSettings | None = None,
    title: str = "Cross-architecture evaluation",
) -> tuple[list[SummaryRow], dict[str, Path]]:
    """Summarise ``results`` and write ``results.md``, ``results.csv``, ``results.json`` and ``accuracy.png``.

    Args:
        results: Cell records (at least one).
        out: The folder to write into.
        settings: The settings, quoted in the Markdown notes and stored in the JSON.
        title: Heading of the Markdown file and the chart.

    Returns:
        ``(rows, files)``: the summary rows and the written paths by kind (``"markdown"``, ``"csv"``, ``"json"``,
        ``"chart"``, and ``"markdown_by_set"`` when a group pools several sets).

    Raises:
        TypeError: If ``results`` does not hold ``CellResult`` objects, or ``out`` or ``settings`` has the wrong
            type.
        ValueError: If ``results`` is empty or repeats a cell.
    """
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"`out` must be a str or path, got {describe(out)}")
    if settings is not None and not isinstance(settings, EvalSettings):
        raise TypeError(f"`settings` must be an EvalSettings or None, got {describe(settings)}")
    out = Path(out)
    rows = summarize(results)
    notes = _notes(results, rows, settings)
    pooled = any(r.num_sets > 1 for r in rows)
    seeds = ", ".join(map(str, sorted({r.seed for r in results})))
    files = {
        "markdown": write_markdown(rows, out / "results.md", title=title, notes=notes),
        "csv": write_csv(rows, out / "results.csv"),
        "json": write_json(rows, results, out / "results.json", settings=settings.to_dict() if settings else None),
        "chart": plot_accuracy_bars(rows, out / "accuracy.png", title=title),
    }
    if pooled:
        files["markdown_by_set"] = write_markdown(
            summarize(results, pool_groups=False),
            out / "results_by_set.md",
            title=f"{title}, set by set",
            notes=[
                *notes[:-1],
                f"Training seeds {seeds}: mean ± sample standard deviation over seeds.",
            ],
        )
    else:  # no group pools several sets (any more): a per-set file from before would be stale
        (out / "results_by_set.md").unlink(missing_ok=True)
    return rows, files

"""Cross-architecture evaluation: train a pool of architectures on condensed sets and test them on CIFAR-10.

The package, in the order the data flows:

- [`records`][hmdc_modules.evaluation.records]: the settings, sets, models, cells and cell results, and their JSON
  form ([`EvalSettings`][hmdc_modules.evaluation.records.EvalSettings],
  [`ModelSpec`][hmdc_modules.evaluation.records.ModelSpec], [`CellResult`][hmdc_modules.evaluation.records.CellResult],
  ...); [`pool`][hmdc_modules.evaluation.pool]: the paper's architectures and learning rates.
- [`train`][hmdc_modules.evaluation.train]: [`run_cell`][hmdc_modules.evaluation.train.run_cell] trains and tests one
  (set, model, seed) cell, a pure function of the cell and the settings.
- [`suite`][hmdc_modules.evaluation.suite]: [`run_suite`][hmdc_modules.evaluation.suite.run_suite] plans every cell,
  reuses the finished ones ([`store`][hmdc_modules.evaluation.store]: the output folder) and splits the rest over
  ``torchrun`` ranks.
- [`report`][hmdc_modules.evaluation.report]: the Markdown, CSV, JSON ([`tables`][hmdc_modules.evaluation.tables])
  and chart ([`charts`][hmdc_modules.evaluation.charts]) reports.
- [`baselines`][hmdc_modules.evaluation.baselines]: the "Random" baseline set.

The command line is ``python -m hmdc_modules.evaluate`` (see ``--help``).
"""

from hmdc_modules.distributed import resolve_device
from hmdc_modules.evaluation.baselines import make_random_real_set, sample_per_class
from hmdc_modules.evaluation.charts import plot_accuracy_bars
from hmdc_modules.evaluation.pool import (
    DEFAULT_LEARNING_RATE,
    PAPER_LEARNING_RATES,
    PAPER_POOL,
    default_learning_rate,
    model_family,
)
from hmdc_modules.evaluation.records import Cell, CellResult, EvalSettings, ModelSpec, SetSpec, resolve_set_path
from hmdc_modules.evaluation.report import write_reports
from hmdc_modules.evaluation.store import load_results
from hmdc_modules.evaluation.suite import SuiteReport, plan_cells, run_suite
from hmdc_modules.evaluation.tables import (
    AVERAGE_LABELS,
    METRICS,
    SummaryRow,
    format_markdown,
    mean_std,
    summarize,
    write_csv,
    write_json,
    write_markdown,
)
from hmdc_modules.evaluation.train import evaluate_accuracy, file_sha256, load_test_set, read_set, run_cell

__all__ = [
    "AVERAGE_LABELS",
    "DEFAULT_LEARNING_RATE",
    "METRICS",
    "PAPER_LEARNING_RATES",
    "PAPER_POOL",
    "Cell",
    "CellResult",
    "EvalSettings",
    "ModelSpec",
    "SetSpec",
    "SuiteReport",
    "SummaryRow",
    "default_learning_rate",
    "evaluate_accuracy",
    "file_sha256",
    "format_markdown",
    "load_results",
    "load_test_set",
    "make_random_real_set",
    "mean_std",
    "model_family",
    "plan_cells",
    "plot_accuracy_bars",
    "read_set",
    "resolve_device",
    "resolve_set_path",
    "run_cell",
    "run_suite",
    "sample_per_class",
    "summarize",
    "write_csv",
    "write_json",
    "write_markdown",
    "write_reports",
]

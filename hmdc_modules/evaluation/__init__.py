"""Cross-architecture evaluation: train a pool of architectures on condensed sets and test them on CIFAR-10.

- [`ModelSpec`][hmdc_modules.evaluation.pool.ModelSpec]: one architecture of the pool (ConvNet, ResNets, ViTs,
  any timm model) and its recipe; [`PAPER_POOL`][hmdc_modules.evaluation.pool.PAPER_POOL] lists the paper's.
- [`run_cell`][hmdc_modules.evaluation.training.run_cell]: train and test one (set, model, seed) cell, a pure
  function of the cell and the [`EvalSettings`][hmdc_modules.evaluation.training.EvalSettings].
- [`run_suite`][hmdc_modules.evaluation.runner.run_suite]: every cell, resumably, with the Markdown, CSV, JSON and
  chart reports ([`summarize`][hmdc_modules.evaluation.tables.summarize],
  [`plot_accuracy_bars`][hmdc_modules.evaluation.charts.plot_accuracy_bars]).
- [`make_random_real_set`][hmdc_modules.evaluation.baselines.make_random_real_set]: the "Random" baseline set.

The command line is ``python -m hmdc_modules.evaluate`` (see ``--help``).
"""

from hmdc_modules.evaluation.baselines import make_random_real_set, sample_per_class
from hmdc_modules.evaluation.cells import Cell, CellResult, SetSpec, file_sha256, plan_cells, resolve_set_path
from hmdc_modules.evaluation.charts import plot_accuracy_bars
from hmdc_modules.evaluation.pool import (
    DEFAULT_LEARNING_RATE,
    PAPER_LEARNING_RATES,
    PAPER_POOL,
    ModelSpec,
    default_learning_rate,
    model_family,
)
from hmdc_modules.evaluation.runner import SuiteReport, load_results, run_suite, write_reports
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
from hmdc_modules.evaluation.training import EvalSettings, evaluate_accuracy, load_test_set, resolve_device, run_cell

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

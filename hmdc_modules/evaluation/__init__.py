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
- [`paired`][hmdc_modules.evaluation.paired]: paired differences between arms, with Student-t intervals.
- [`protocols`][hmdc_modules.evaluation.protocols]: the named evaluation protocols (``hmdc``, ``dsa``,
  ``ddranking``); [`augmentation`][hmdc_modules.evaluation.augmentation]: their augmentation modes, schedules and
  optimiser; [`foreign`][hmdc_modules.evaluation.foreign]: sets saved by other tools.

The command line is ``python -m hmdc_modules.evaluate`` (see ``--help``).
"""

from hmdc_modules.distributed import resolve_device
from hmdc_modules.evaluation.augmentation import (
    AUGMENT_MODES,
    DSA_OPS,
    LR_SCHEDULES,
    OneOpAugment,
    build_augment,
    learning_rate_at,
)
from hmdc_modules.evaluation.baselines import make_random_real_set, sample_per_class
from hmdc_modules.evaluation.charts import plot_accuracy_bars
from hmdc_modules.evaluation.foreign import (
    NORMALIZATIONS,
    SET_FORMATS,
    ForeignSetError,
    SetSource,
    detect_set_format,
    read_any_set,
)
from hmdc_modules.evaluation.paired import PairedDifference, paired_difference, student_t_quantile
from hmdc_modules.evaluation.pool import (
    DEFAULT_LEARNING_RATE,
    PAPER_FT_POOL,
    PAPER_LEARNING_RATES,
    PAPER_POOL,
    default_learning_rate,
    model_family,
    parse_model_entry,
)
from hmdc_modules.evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOLS, Protocol, protocol_settings
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
    "AUGMENT_MODES",
    "AVERAGE_LABELS",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_PROTOCOL",
    "DSA_OPS",
    "LR_SCHEDULES",
    "METRICS",
    "NORMALIZATIONS",
    "PAPER_FT_POOL",
    "PAPER_LEARNING_RATES",
    "PAPER_POOL",
    "PROTOCOLS",
    "SET_FORMATS",
    "Cell",
    "CellResult",
    "EvalSettings",
    "ForeignSetError",
    "ModelSpec",
    "OneOpAugment",
    "PairedDifference",
    "Protocol",
    "SetSource",
    "SetSpec",
    "SuiteReport",
    "SummaryRow",
    "build_augment",
    "default_learning_rate",
    "detect_set_format",
    "evaluate_accuracy",
    "file_sha256",
    "format_markdown",
    "learning_rate_at",
    "load_results",
    "load_test_set",
    "make_random_real_set",
    "mean_std",
    "model_family",
    "paired_difference",
    "parse_model_entry",
    "plan_cells",
    "plot_accuracy_bars",
    "protocol_settings",
    "read_any_set",
    "read_set",
    "resolve_device",
    "resolve_set_path",
    "run_cell",
    "run_suite",
    "sample_per_class",
    "student_t_quantile",
    "summarize",
    "write_csv",
    "write_json",
    "write_markdown",
    "write_reports",
]

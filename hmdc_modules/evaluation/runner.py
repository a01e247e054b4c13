"""The resumable runner: every cell of a suite, one JSON record per finished cell, then the reports.

The output folder holds

- ``settings.json``: the [`EvalSettings`][hmdc_modules.evaluation.training.EvalSettings] it was started with;
- ``cells/<set>--<model>--seed<seed>.json``: one [`CellResult`][hmdc_modules.evaluation.cells.CellResult] per
  finished cell, each written atomically (temporary file, then rename);
- ``results.md``, ``results.csv``, ``results.json``: the summary
  ([`summarize`][hmdc_modules.evaluation.tables.summarize]), one column per set or group of sets;
- ``results_by_set.md``: when a group pools several sets, the same tables with one column per set;
- ``accuracy.png``: the bar chart ([`plot_accuracy_bars`][hmdc_modules.evaluation.charts.plot_accuracy_bars]).

A cell whose record exists is skipped, so an interrupted evaluation continues where it stopped and more sets,
models or seeds can be added to a folder later. The reports cover every record in the folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from hmdc_modules._validation import describe
from hmdc_modules.evaluation import training
from hmdc_modules.evaluation.cells import Cell, CellResult, SetSpec, file_sha256, plan_cells
from hmdc_modules.evaluation.charts import plot_accuracy_bars
from hmdc_modules.evaluation.pool import ModelSpec
from hmdc_modules.evaluation.tables import (
    SummaryRow,
    _atomic_write_text,
    summarize,
    write_csv,
    write_json,
    write_markdown,
)
from hmdc_modules.evaluation.training import EvalSettings, load_test_set, resolve_device

__all__ = ["SuiteReport", "load_results", "run_suite", "write_reports"]

_SETTINGS_FILE = "settings.json"
_CELLS_DIR = "cells"


@dataclass(frozen=True)
class SuiteReport:
    """What [`run_suite`][hmdc_modules.evaluation.runner.run_suite] did.

    Attributes:
        results: Every cell record in the output folder, the requested cells first (in plan order).
        rows: Their summary ([`summarize`][hmdc_modules.evaluation.tables.summarize]).
        files: The report files written, by kind: ``"markdown"``, ``"csv"``, ``"json"``, ``"chart"``.
        trained: Cells trained by this call.
        skipped: Requested cells whose record already existed.
    """

    results: list[CellResult]
    rows: list[SummaryRow]
    files: dict[str, Path] = field(default_factory=dict)
    trained: int = 0
    skipped: int = 0


def _cell_file(out: Path, key: str) -> Path:
    return out / _CELLS_DIR / f"{key}.json"


def load_results(out: str | os.PathLike[str]) -> list[CellResult]:
    """Every cell record stored in an output folder, sorted by file name.

    Args:
        out: The output folder of [`run_suite`][hmdc_modules.evaluation.runner.run_suite].

    Returns:
        The records (empty if there are none).

    Raises:
        ValueError: If a record file is not a cell record.
    """
    folder = Path(out) / _CELLS_DIR
    if not folder.is_dir():
        return []
    results = []
    for path in sorted(folder.glob("*.json")):
        try:
            results.append(CellResult.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"'{path}' is not a cell record ({error}); remove it to recompute the cell") from error
    return results


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
        ValueError: If ``results`` is empty or repeats a cell.
    """
    out = Path(out)
    rows = summarize(results)
    seeds = sorted({r.seed for r in results})
    notes = []
    if settings is not None:
        every = f"every {settings.eval_every} epochs and " if settings.eval_every else ""
        notes.append(
            f"Each model trained {settings.epochs} epochs on the set (SGD, momentum {settings.momentum}, weight "
            f"decay {settings.weight_decay}, batch {settings.batch_size}, augmentation "
            f"{'on' if settings.augment else 'off'}, cutmix p {settings.cutmix_p} for CNNs), tested {every}"
            "after the last epoch."
        )
    pooled = any(r.num_sets > 1 for r in rows)
    spread = "every seed of every set in the column's group" if pooled else "seeds"
    notes.append(
        f"Seeds {', '.join(map(str, seeds))}: each cell is mean ± sample standard deviation over {spread} (ddof = 1; "
        "n/a with one value). Averages (bold) are means of the models' means."
    )
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
            notes=[*notes[:-1], f"Seeds {', '.join(map(str, seeds))}: mean ± sample standard deviation over seeds."],
        )
    else:  # no group pools several sets (any more): a per-set file from before would be stale
        (out / "results_by_set.md").unlink(missing_ok=True)
    return rows, files


def _check_settings_file(out: Path, settings: EvalSettings) -> None:
    path = out / _SETTINGS_FILE
    if path.is_file():
        try:
            stored = EvalSettings.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as error:
            raise ValueError(f"`out`: '{path}' is not an evaluation settings file ({error})") from error
        changed = settings.differences(stored)
        if changed:
            listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"`out` '{out}' holds results computed with other settings ({listed}); use a new output folder, or "
                "the folder's settings to continue it"
            )
    else:
        _atomic_write_text(path, json.dumps(settings.to_dict(), indent=2) + "\n")


def _check_stored(path: Path, cell: Cell, sha: str) -> CellResult:
    try:
        stored = CellResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"'{path}' is not a cell record ({error}); remove it to recompute the cell") from error
    if stored.set_sha256 != sha:
        raise ValueError(
            f"set '{cell.set.name}' ('{cell.set.path}') changed since '{path}' was computed (other file content); "
            "give the new set another name, or use a new output folder"
        )
    wanted = cell.model.to_dict()
    if stored.model != wanted:
        changed = ", ".join(
            f"{k}: {stored.model.get(k)!r} -> {wanted.get(k)!r}" for k in wanted if stored.model.get(k) != wanted.get(k)
        )
        raise ValueError(
            f"model '{cell.model.display_name}' of '{path}' was trained with another recipe ({changed}); give the "
            "new recipe another label, or use a new output folder"
        )
    return stored


def run_suite(
    sets: Sequence[SetSpec | str | os.PathLike[str]],
    models: Sequence[ModelSpec | str],
    seeds: Sequence[int],
    settings: EvalSettings,
    out: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    title: str = "Cross-architecture evaluation",
) -> SuiteReport:
    """Evaluate every set on every model with every seed, resumably, and write the reports.

    Steps: check the arguments, every set file and every weights file; compare ``settings`` with the folder's
    ``settings.json`` (written on the first call); load the test images once per class subset; then for each cell
    of [`plan_cells`][hmdc_modules.evaluation.cells.plan_cells] either verify and reuse its stored record or run
    [`run_cell`][hmdc_modules.evaluation.training.run_cell] and store the record atomically; finally write the
    reports over every record of the folder with
    [`write_reports`][hmdc_modules.evaluation.runner.write_reports].

    Args:
        sets: [`SetSpec`][hmdc_modules.evaluation.cells.SetSpec] objects, or paths of set files or run folders
            (named after their folders).
        models: [`ModelSpec`][hmdc_modules.evaluation.pool.ModelSpec] objects or model names.
        seeds: One training per seed and (set, model).
        settings: The shared training and test settings.
        out: The output folder (created if needed).
        device: Where to train (``"auto"``: CUDA when available); not part of the settings a folder is bound to.
        progress: Show tqdm bars (cells and epochs); ``False`` for quiet runs.
        log: Called with one line per started, finished or skipped cell (``None``: ``tqdm.write`` with progress
            bars, ``print`` without).
        title: Heading of the reports.

    Returns:
        A [`SuiteReport`][hmdc_modules.evaluation.runner.SuiteReport].

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``settings`` differ from the folder's, a stored record was computed from another set file
            or model recipe, or a list is empty or repeats a name.
        FileNotFoundError: If a set, the CIFAR-10 test data or a weights file is missing.

    Examples:
        >>> report = run_suite(["runs/hmdc_cifar10", "runs/random_ipc1"], ["convnet", "resnet18"], [0, 1, 2],
        ...                    EvalSettings(epochs=300), "runs/eval/ipc1")  # doctest: +SKIP
        >>> report.files["markdown"]  # doctest: +SKIP
        PosixPath('runs/eval/ipc1/results.md')
    """
    from tqdm.auto import tqdm

    if not isinstance(settings, EvalSettings):
        raise TypeError(f"`settings` must be an EvalSettings, got {describe(settings)}")
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"`out` must be a str or path, got {describe(out)}")
    if not isinstance(progress, bool):
        raise TypeError(f"`progress` must be a bool, got {describe(progress)}")
    if log is not None and not callable(log):
        raise TypeError(f"`log` must be callable or None, got {describe(log)}")
    for arg, values in (("sets", sets), ("models", models), ("seeds", seeds)):
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise TypeError(f"`{arg}` must be a list, got {describe(values)}")
    set_specs = [s if isinstance(s, SetSpec) else SetSpec.from_path(s) for s in sets]
    model_specs = [m if isinstance(m, ModelSpec) else ModelSpec(m) for m in models]
    cells = plan_cells(set_specs, model_specs, list(seeds))
    device = resolve_device(device)
    emit = log if log is not None else (tqdm.write if progress else print)
    out = Path(out)

    from hmdc_modules.data import read_synthetic_set

    hashes: dict[str, str] = {}
    classes_of: dict[str, tuple[int, ...]] = {}
    for spec in set_specs:
        stored = read_synthetic_set(spec.path)  # fails early on a missing or foreign file
        hashes[spec.name] = file_sha256(spec.path)
        classes_of[spec.name] = tuple(sorted(int(c) for c in stored.labels.unique()))
    for spec in model_specs:
        if spec.weights is not None and not Path(spec.weights).is_file():
            raise FileNotFoundError(f"`models`: no weights file at '{spec.weights}' for '{spec.display_name}'")

    out.mkdir(parents=True, exist_ok=True)
    _check_settings_file(out, settings)
    pending: list[Cell] = []
    done: dict[str, CellResult] = {}
    for cell in cells:
        path = _cell_file(out, cell.key)
        if path.is_file():
            stored = _check_stored(path, cell, hashes[cell.set.name])
            if stored.group != cell.set.group:  # the group is a report label: the latest one given wins
                stored = dataclasses.replace(stored, set_group=cell.set.group)
                _atomic_write_text(path, json.dumps(stored.to_dict(), indent=2) + "\n")
            done[cell.key] = stored
        else:
            pending.append(cell)

    test_sets: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}
    for cell in pending:  # load the data before the first training: a missing test split fails at once
        classes = classes_of[cell.set.name]
        if classes not in test_sets:
            test_sets[classes] = load_test_set(settings, classes)

    trained = 0
    bar = tqdm(total=len(cells), desc="cells", unit="cell", disable=not progress)
    for index, cell in enumerate(cells, start=1):
        where = f"[{index}/{len(cells)}] {cell.set.name} / {cell.model.display_name} / seed {cell.seed}"
        if cell.key in done:
            emit(f"{where}: done before, skipped")
            bar.update()
            continue
        if not progress:
            emit(f"{where}: training {settings.epochs} epochs on {device}")
        result = training.run_cell(
            cell, settings, device=device, progress=progress, test_set=test_sets[classes_of[cell.set.name]]
        )
        _atomic_write_text(_cell_file(out, cell.key), json.dumps(result.to_dict(), indent=2) + "\n")
        done[cell.key] = result
        trained += 1
        emit(
            f"{where}: final {result.final_accuracy:.2f}%, best {result.best_accuracy:.2f}% "
            f"(epoch {result.best_epoch}), {result.seconds:.1f} s"
        )
        bar.update()
    bar.close()

    requested = [done[c.key] for c in cells]
    keys = {c.key for c in cells}
    others = [r for r in load_results(out) if r.key not in keys]
    results = requested + others
    rows, files = write_reports(results, out, settings=settings, title=title)
    return SuiteReport(results=results, rows=rows, files=files, trained=trained, skipped=len(cells) - trained)

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

Under ``torchrun`` (a ``DistributedContext`` of ``hmdc_modules.distributed`` passed as ``dist``) the pending cells
are split over the ranks, each rank stores the records it finishes, and rank 0 gathers them and writes
``settings.json`` and the reports: the same tables as one process, in the same order.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

from hmdc_modules._validation import describe
from hmdc_modules.distributed import DistributedContext, all_gather_objects
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

T = TypeVar("T")


@dataclass(frozen=True)
class SuiteReport:
    """What [`run_suite`][hmdc_modules.evaluation.runner.run_suite] did.

    Attributes:
        results: Every cell record in the output folder, the requested cells first (in plan order).
        rows: Their summary ([`summarize`][hmdc_modules.evaluation.tables.summarize]).
        files: The report files written, by kind: ``"markdown"``, ``"csv"``, ``"json"``, ``"chart"``.
        trained: Cells trained by this call (by all ranks together under ``torchrun``).
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
        f"Training seeds {', '.join(map(str, seeds))}: each cell is mean ± sample standard deviation over {spread} "
        "(ddof = 1; n/a with one value). Averages (bold) are means of the models' means."
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
            notes=[
                *notes[:-1],
                f"Training seeds {', '.join(map(str, seeds))}: mean ± sample standard deviation over seeds.",
            ],
        )
    else:  # no group pools several sets (any more): a per-set file from before would be stale
        (out / "results_by_set.md").unlink(missing_ok=True)
    return rows, files


def _print_line(line: str) -> None:
    """Print ``line`` and its newline in one write, so that the lines of ranks sharing a pipe never run together."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _check_settings_file(out: Path, settings: EvalSettings, *, write: bool = True) -> bool:
    """Compare ``settings`` with the folder's ``settings.json``, writing it when absent and ``write``.

    Returns:
        Whether the folder is bound to settings now (the file existed or was written).
    """
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
        return True
    if write:
        _atomic_write_text(path, json.dumps(settings.to_dict(), indent=2) + "\n")
    return write


def _check_stored(path: Path, cell: Cell, sha: str, settings: EvalSettings | None = None) -> CellResult:
    """Read the record of ``cell`` at ``path`` and check it still belongs to the cell (and to ``settings``)."""
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
    if settings is not None and stored.settings:  # a folder without settings.json: each record answers for itself
        try:
            differences = settings.differences(EvalSettings.from_dict(stored.settings))
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"'{path}' holds unreadable settings ({error}); remove it to recompute the cell"
            ) from error
        if differences:
            listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in differences.items())
            raise ValueError(f"'{path}' was computed with other settings ({listed}); remove it to recompute the cell")
    return stored


_Failure = tuple[str, str]
"""A rank's failure as it travels to the others: the exception's type name and message."""

_REMOTE_ERRORS: dict[str, type[Exception]] = {
    "FileNotFoundError": FileNotFoundError,
    "TypeError": TypeError,
    "ValueError": ValueError,
}


def _exchange(error: Exception | None, payload: T, ctx: DistributedContext) -> list[tuple[_Failure | None, T]]:
    """Every rank's ``(failure, payload)``, in rank order: a collective, so every rank calls it at the same point."""
    failure = None if error is None else (type(error).__name__, str(error))
    return all_gather_objects((failure, payload), ctx)


def _raise_failures(
    exchanged: Sequence[tuple[_Failure | None, object]], error: Exception | None, ctx: DistributedContext
) -> None:
    """Raise on every rank when any rank failed: a rank's own error where it failed, else the first failure seen."""
    if error is not None:
        raise error
    for rank, (failure, _) in enumerate(exchanged):
        if failure is not None:
            kind, message = failure
            if kind in _REMOTE_ERRORS:
                raise _REMOTE_ERRORS[kind](f"rank {rank} of {ctx.world_size}: {message}")
            raise RuntimeError(f"rank {rank} of {ctx.world_size} failed with {kind}: {message}")


def _prepare(
    sets: Sequence[SetSpec | str | os.PathLike[str]],
    models: Sequence[ModelSpec | str],
    seeds: Sequence[int],
    settings: EvalSettings,
    out: Path,
    ctx: DistributedContext,
) -> tuple[list[Cell], dict[str, tuple[int, ...]], dict[str, CellResult]]:
    """Plan the cells, check the sets, weights and settings, and read the records this rank's folder holds.

    Only rank 0 writes (``settings.json``, relabelled records); the other ranks read their folder, which is rank 0's
    one on a shared filesystem.

    Returns:
        ``(cells, classes_of, held)``: the planned cells, each set's classes by name, and the valid records of
        planned cells found in the folder, by cell key.
    """
    from hmdc_modules.condensation.data import read_synthetic_set

    set_specs = [s if isinstance(s, SetSpec) else SetSpec.from_path(s) for s in sets]
    model_specs = [m if isinstance(m, ModelSpec) else ModelSpec(m) for m in models]
    cells = plan_cells(set_specs, model_specs, list(seeds))
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
    bound = _check_settings_file(out, settings, write=ctx.is_main)
    held: dict[str, CellResult] = {}
    for cell in cells:
        path = _cell_file(out, cell.key)
        if path.is_file():
            stored = _check_stored(path, cell, hashes[cell.set.name], None if bound else settings)
            if stored.group != cell.set.group:  # the group is a report label: the latest one given wins
                stored = dataclasses.replace(stored, set_group=cell.set.group)
                if ctx.is_main:
                    _atomic_write_text(path, json.dumps(stored.to_dict(), indent=2) + "\n")
            held[cell.key] = stored
    return cells, classes_of, held


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
    dist: DistributedContext | None = None,
) -> SuiteReport:
    """Evaluate every set on every model with every seed, resumably, and write the reports.

    Steps: check the arguments, every set file and every weights file; compare ``settings`` with the folder's
    ``settings.json`` (written on the first call); load the test images once per class subset; then for each cell
    of [`plan_cells`][hmdc_modules.evaluation.cells.plan_cells] either verify and reuse its stored record or run
    [`run_cell`][hmdc_modules.evaluation.training.run_cell] and store the record atomically; finally write the
    reports over every record of the folder with
    [`write_reports`][hmdc_modules.evaluation.runner.write_reports].

    With a ``DistributedContext`` of $W > 1$ ranks (``hmdc_modules.distributed``; every rank of a ``torchrun`` job
    calls this with the same arguments), every rank checks the inputs and reads its output folder; a cell whose
    record no rank holds is pending, and rank $r$ trains the pending cells ``owned_indices`` gives it (those at
    positions $r$, $r + W$, ...), storing each record in its own folder as soon as it is done (an interrupted job
    keeps them). The records are then gathered on rank 0, which stores those its folder lacks and alone writes
    ``settings.json`` and the reports; every rank returns the same results and rows. Cells are trained
    independently and seeded, so the tables equal a one-process run's. On a shared filesystem all ranks use one
    folder; without one, rank 0's folder is the evaluation's, and records left in another rank's folder by an
    interrupted job are taken from it instead of being trained again. A failure on one rank (a missing file, an
    error while training) is raised on every rank once the ranks meet, after rank 0 stored the records finished so
    far.

    Args:
        sets: [`SetSpec`][hmdc_modules.evaluation.cells.SetSpec] objects, or paths of set files or run folders
            (named after their folders).
        models: [`ModelSpec`][hmdc_modules.evaluation.pool.ModelSpec] objects or model names.
        seeds: One training per seed and (set, model).
        settings: The shared training and test settings.
        out: The output folder (created if needed).
        device: Where to train (``"auto"``: ``dist.device`` with a context, else CUDA when available); not part
            of the settings a folder is bound to.
        progress: Show tqdm bars (cells and epochs; on rank 0 only); ``False`` for quiet runs.
        log: Called with one line per started, finished or skipped cell (``None``: ``tqdm.write`` with progress
            bars, ``print`` without). Under several ranks each line starts with ``[rank R]``.
        title: Heading of the reports.
        dist: The process group, from ``hmdc_modules.distributed.init_distributed`` (``None``: this process
            alone).

    Returns:
        A [`SuiteReport`][hmdc_modules.evaluation.runner.SuiteReport]; ranks other than 0 get the same results,
        rows and counts, and no ``files``.

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
    if dist is not None and not isinstance(dist, DistributedContext):
        raise TypeError(f"`dist` must be a DistributedContext or None, got {describe(dist)}")
    for arg, values in (("sets", sets), ("models", models), ("seeds", seeds)):
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise TypeError(f"`{arg}` must be a list, got {describe(values)}")
    if dist is not None and isinstance(device, str) and device == "auto":
        device = dist.device
    device = resolve_device(device)
    ctx = dist if dist is not None else DistributedContext(0, 1, 0, device, None)
    out = Path(out)
    show = progress and ctx.is_main
    prefix = f"[rank {ctx.rank}] " if ctx.enabled else ""
    write_line = log if log is not None else (tqdm.write if show else _print_line)

    def emit(line: str) -> None:
        write_line(prefix + line)

    # 1. Every rank checks the inputs and reads its folder. Meeting here also keeps the other ranks from reading
    # the records before rank 0 wrote settings.json or relabelled them; a failure anywhere stops every rank.
    cells: list[Cell] = []
    classes_of: dict[str, tuple[int, ...]] = {}
    held: dict[str, CellResult] = {}
    error: Exception | None = None
    try:
        cells, classes_of, held = _prepare(sets, models, seeds, settings, out, ctx)
    except Exception as caught:  # raised below, on every rank
        error = caught
    exchanged = _exchange(error, sorted(held), ctx)
    _raise_failures(exchanged, error, ctx)

    # 2. Who does what, the same on every rank: a held cell comes from the lowest rank holding it (rank 0 when it
    # does); the pending ones are split by striding.
    holders = [set(keys) for _, keys in exchanged]
    source: dict[str, int] = {}
    pending: list[Cell] = []
    for cell in cells:
        ranks = [rank for rank, keys in enumerate(holders) if cell.key in keys]
        if ranks:
            source[cell.key] = ranks[0]
        else:
            pending.append(cell)
    mine = {pending[i].key for i in ctx.owned(len(pending))}

    # 3. Each rank trains its cells, storing each record at once.
    trained_here: list[CellResult] = []
    bar = tqdm(total=len(source) + len(mine), desc="cells", unit="cell", disable=not show)
    try:
        test_sets: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}
        for cell in pending:  # load the data before the first training: a missing test split fails at once
            classes = classes_of[cell.set.name]
            if cell.key in mine and classes not in test_sets:
                test_sets[classes] = load_test_set(settings, classes)
        for index, cell in enumerate(cells, start=1):
            where = f"[{index}/{len(cells)}] {cell.set.name} / {cell.model.display_name} / seed {cell.seed}"
            if cell.key in source:
                if ctx.is_main:
                    holder = source[cell.key]
                    whence = f" (record from rank {holder}'s folder)" if holder else ""
                    emit(f"{where}: done before, skipped{whence}")
                    bar.update()
                continue
            if cell.key not in mine:
                continue
            if not show:
                emit(f"{where}: training {settings.epochs} epochs on {device}")
            result = training.run_cell(
                cell, settings, device=device, progress=show, test_set=test_sets[classes_of[cell.set.name]]
            )
            _atomic_write_text(_cell_file(out, cell.key), json.dumps(result.to_dict(), indent=2) + "\n")
            trained_here.append(result)
            emit(
                f"{where}: final {result.final_accuracy:.2f}%, best {result.best_accuracy:.2f}% "
                f"(epoch {result.best_epoch}), {result.seconds:.1f} s"
            )
            bar.update()
    except Exception as caught:  # raised below, on every rank, once rank 0 stored what the others finished
        error = caught
    finally:
        bar.close()

    # 4. Rank 0 gathers the records it lacks: those trained elsewhere, those only another rank's folder holds.
    if ctx.is_main:
        outgoing: list[dict[str, object]] = []
    else:
        outgoing = [r.to_dict() for r in trained_here]
        outgoing += [held[key].to_dict() for key, holder in source.items() if holder == ctx.rank]
    exchanged_records = _exchange(error, (len(trained_here), outgoing), ctx)
    trained = sum(count for _, (count, _) in exchanged_records)
    failed = error is not None or any(failure is not None for failure, _ in exchanged_records)

    results: list[CellResult] = []
    rows: list[SummaryRow] = []
    files: dict[str, Path] = {}
    if ctx.is_main:
        try:
            done = {key: held[key] for key, holder in source.items() if holder == 0}
            done.update((r.key, r) for r in trained_here)
            for _, (_, records) in exchanged_records[1:]:
                for data in records:
                    record = CellResult.from_dict(data)
                    path = _cell_file(out, record.key)
                    if not path.is_file():
                        _atomic_write_text(path, json.dumps(data, indent=2) + "\n")
                    done[record.key] = record
            if not failed:
                keys = {c.key for c in cells}
                results = [done[c.key] for c in cells] + [r for r in load_results(out) if r.key not in keys]
                rows, files = write_reports(results, out, settings=settings, title=title)
        except Exception as caught:
            if failed:  # the first failure is the one to report; the records are stored as far as possible
                emit(f"could not store every gathered record: {caught}")
            else:
                error = caught
    if failed:  # every rank knows it: no rank meets the others again
        _raise_failures(exchanged_records, error, ctx)

    # 5. Every rank returns rank 0's results.
    final = _exchange(error, [r.to_dict() for r in results] if ctx.is_main and ctx.enabled else None, ctx)
    _raise_failures(final, error, ctx)
    if not ctx.is_main:
        results = [CellResult.from_dict(data) for data in final[0][1] or []]
        rows = summarize(results)
    return SuiteReport(results=results, rows=rows, files=files, trained=trained, skipped=len(cells) - trained)

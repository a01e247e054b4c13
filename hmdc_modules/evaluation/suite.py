"""A whole evaluation: plan the cells, reuse the finished ones, train the rest (over ranks), report.

[`plan_cells`][hmdc_modules.evaluation.suite.plan_cells] lists the cells in a fixed order;
[`run_suite`][hmdc_modules.evaluation.suite.run_suite] runs the plan in five steps, each a function below:

1. every rank checks the inputs and reads its output folder (``_prepare``);
2. every rank computes the same assignment: a finished cell comes from the lowest rank holding its record, a
   pending one goes to rank ``i mod W`` of the pending list (``_assign``);
3. each rank trains its cells, storing each record at once (``_train_share``);
4. rank 0 gathers and stores the records it lacks, and writes the reports (``_collect``);
5. every rank returns rank 0's results.

Ranks meet only at the end of steps 1, 3 and 4 ([`meet`][hmdc_modules.evaluation.ranks.meet]); a failure anywhere
stops every rank there. The folder layout is [`store`][hmdc_modules.evaluation.store]'s.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hmdc_modules._validation import check_positive_int, describe
from hmdc_modules.distributed import DistributedContext, resolve_device
from hmdc_modules.evaluation import train
from hmdc_modules.evaluation.ranks import meet
from hmdc_modules.evaluation.records import Cell, CellResult, EvalSettings, ModelSpec, SetSpec
from hmdc_modules.evaluation.report import write_reports
from hmdc_modules.evaluation.store import (
    SETTINGS_FILE,
    bind_settings,
    cell_file,
    check_record,
    load_results,
    write_json,
)
from hmdc_modules.evaluation.tables import SummaryRow, summarize

__all__ = ["SuiteReport", "plan_cells", "run_suite"]


# ----------------------------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------------------------


def _check_list(arg: str, values: Any) -> None:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"`{arg}` must be a list, got {describe(values)}")
    if not values:
        raise ValueError(f"`{arg}` must not be empty, got {list(values)!r}")


def _check_unique(arg: str, values: list[Any], what: str, hint: str = "") -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"`{arg}`: {what} must be unique{hint}, got repeats {repeated}")


def plan_cells(sets: Sequence[SetSpec], models: Sequence[ModelSpec], seeds: Sequence[int]) -> list[Cell]:
    """Every (set, model, seed) cell of a suite, in a fixed order: sets, then models, then seeds.

    The order depends only on the arguments, so every rank of a distributed run builds the same list and can take
    its share by position.

    Args:
        sets: The synthetic sets, with unique names.
        models: The architectures, with unique display names.
        seeds: The seeds, unique ints >= 0.

    Returns:
        ``len(sets) * len(models) * len(seeds)`` cells.

    Raises:
        TypeError: If an argument is not a list or an entry has the wrong type.
        ValueError: If a list is empty, or names, display names, seeds or cell keys repeat.

    Examples:
        >>> cells = plan_cells([SetSpec("a", "a.pt")], [ModelSpec("convnet", width=8)], [0, 1])
        >>> [c.key for c in cells]
        ['a--convnet--seed0', 'a--convnet--seed1']
    """
    for arg, values in (("sets", sets), ("models", models), ("seeds", seeds)):
        _check_list(arg, values)
    for arg, values, kind in (("sets", sets, SetSpec), ("models", models, ModelSpec)):
        for item in values:
            if not isinstance(item, kind):
                raise TypeError(f"`{arg}` must hold {kind.__name__} objects, got {describe(item)}")
    for seed in seeds:
        check_positive_int("seeds", seed, minimum=0)
    _check_unique("sets", [s.name for s in sets], "set names")
    _check_unique("models", [m.display_name for m in models], "model labels", " (give `label` to tell them apart)")
    _check_unique("seeds", list(seeds), "seeds")
    cells = [Cell(s, m, seed) for s in sets for m in models for seed in seeds]
    _check_unique("sets", [c.key for c in cells], "cell keys", " (names may not differ only in special characters)")
    return cells


# ----------------------------------------------------------------------------------------------------------------
# The steps
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteReport:
    """What [`run_suite`][hmdc_modules.evaluation.suite.run_suite] did.

    Attributes:
        results: Every cell record in the output folder, the requested cells first (in plan order).
        rows: Their summary ([`summarize`][hmdc_modules.evaluation.tables.summarize]).
        files: The report files written, by kind: ``"markdown"``, ``"csv"``, ``"json"``, ``"chart"`` (and
            ``"markdown_by_set"`` when a group pools several sets).
        trained: Cells trained by this call (by all ranks together under ``torchrun``).
        skipped: Requested cells whose record already existed.
    """

    results: list[CellResult]
    rows: list[SummaryRow]
    files: dict[str, Path] = field(default_factory=dict)
    trained: int = 0
    skipped: int = 0


@dataclass
class _Plan:
    """Step 1's outcome on one rank: the cells, each set's classes, and the valid records its folder holds."""

    cells: list[Cell] = field(default_factory=list)
    classes_of: dict[str, tuple[int, ...]] = field(default_factory=dict)
    held: dict[str, CellResult] = field(default_factory=dict)


def _prepare(
    sets: Sequence[SetSpec | str | os.PathLike[str]],
    models: Sequence[ModelSpec | str],
    seeds: Sequence[int],
    settings: EvalSettings,
    out: Path,
    ctx: DistributedContext,
) -> _Plan:
    """Plan the cells, read every set once, check weights and settings, and read this rank's folder.

    Only rank 0 writes (``settings.json``, relabelled records); the other ranks read their folder, which is rank 0's
    one on a shared filesystem.
    """
    _check_list("sets", sets)
    _check_list("models", models)
    set_specs = [s if isinstance(s, SetSpec) else SetSpec.from_path(s) for s in sets]
    model_specs = [train.resolve_model(m if isinstance(m, ModelSpec) else ModelSpec(m), settings) for m in models]
    plan = _Plan(cells=plan_cells(set_specs, model_specs, seeds))
    hashes: dict[str, str] = {}
    for spec in set_specs:
        stored, hashes[spec.name] = train.read_set(spec.path, spec.source)  # fails early on an unreadable file
        plan.classes_of[spec.name] = tuple(sorted(int(c) for c in stored.labels.unique()))
    for spec in model_specs:
        if spec.weights is not None and not Path(spec.weights).is_file():
            raise FileNotFoundError(f"`models`: no weights file at '{spec.weights}' for '{spec.display_name}'")
    for spec in model_specs:  # weights that do not fit, or hub weights out of reach, stop the run before any write
        if spec.weights is not None or spec.pretrained is not None:
            spec.build(settings.num_classes)

    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` '{out}' is a file, expected an output folder")
    out.mkdir(parents=True, exist_ok=True)
    # Records in a folder that had no settings.json answer for their own settings (precision included), also on
    # rank 0, which writes the file now: it binds the folder from here on, not the records written before it.
    had_settings = (out / SETTINGS_FILE).is_file()
    bind_settings(out, settings, write=ctx.is_main)
    for cell in plan.cells:
        path = cell_file(out, cell.key)
        if not path.is_file():
            continue
        stored = check_record(path, cell, hashes[cell.set.name], None if had_settings else settings)
        if stored.group != cell.set.group:  # the group is a report label: the latest one given wins
            stored = dataclasses.replace(stored, set_group=cell.set.group)
            if ctx.is_main:
                write_json(path, stored.to_dict())
        plan.held[cell.key] = stored
    return plan


def _assign(cells: list[Cell], holders: Sequence[Sequence[str]], ctx: DistributedContext) -> tuple[dict, set]:
    """``(source, mine)``: the rank each finished cell's record comes from, and the pending cells this rank trains.

    The same on every rank: a held cell comes from the lowest rank holding it (rank 0 when it does); the pending
    ones are split by striding ([`owned_indices`][hmdc_modules.distributed.owned_indices]).
    """
    held_by = [set(keys) for keys in holders]
    source: dict[str, int] = {}
    pending: list[Cell] = []
    for cell in cells:
        ranks = [rank for rank, keys in enumerate(held_by) if cell.key in keys]
        if ranks:
            source[cell.key] = ranks[0]
        else:
            pending.append(cell)
    return source, {pending[i].key for i in ctx.owned(len(pending))}


def _train_share(
    plan: _Plan,
    source: dict[str, int],
    mine: set[str],
    settings: EvalSettings,
    out: Path,
    *,
    device: torch.device,
    show: bool,
    emit: Callable[[str], None],
    ctx: DistributedContext,
) -> list[CellResult]:
    """Train this rank's cells in plan order, storing each record at once; log the skipped ones on rank 0."""
    from tqdm.auto import tqdm

    test_sets: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}
    for cell in plan.cells:  # load the data before the first training: a missing test split fails at once
        classes = plan.classes_of[cell.set.name]
        if cell.key in mine and classes not in test_sets:
            test_sets[classes] = train.load_test_set(settings, classes)
    trained: list[CellResult] = []
    with tqdm(total=len(source) + len(mine), desc="cells", unit="cell", disable=not show) as bar:
        for index, cell in enumerate(plan.cells, start=1):
            where = f"[{index}/{len(plan.cells)}] {cell.set.name} / {cell.model.display_name} / seed {cell.seed}"
            if cell.key in source and ctx.is_main:
                whence = f" (record from rank {source[cell.key]}'s folder)" if source[cell.key] else ""
                emit(f"{where}: done before, skipped{whence}")
                bar.update()
            if cell.key not in mine:
                continue
            if not show:
                arithmetic = f" in {settings.precision}" if settings.precision != "fp32" else ""
                emit(f"{where}: training {settings.epochs} epochs on {device}{arithmetic}")
            test_set = test_sets[plan.classes_of[cell.set.name]]
            result = train.run_cell(cell, settings, device=device, progress=show, test_set=test_set)
            write_json(cell_file(out, cell.key), result.to_dict())
            trained.append(result)
            emit(
                f"{where}: final {result.final_accuracy:.2f}%, best {result.best_accuracy:.2f}% "
                f"(epoch {result.best_epoch}), {result.seconds:.1f} s"
            )
            bar.update()
    return trained


def _collect(
    plan: _Plan, source: dict[str, int], gathered: Sequence[list[dict[str, Any]]], out: Path
) -> dict[str, CellResult]:
    """On rank 0: every planned record, storing those that only another rank had."""
    done = {key: plan.held[key] for key, holder in source.items() if holder == 0}
    for records in gathered:
        for data in records:
            record = CellResult.from_dict(data)
            path = cell_file(out, record.key)
            if not path.is_file():
                write_json(path, data)
            done[record.key] = record
    return done


def _print_line(line: str) -> None:
    """Print ``line`` and its newline in one write, so that the lines of ranks sharing a pipe never run together."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _check_arguments(settings: Any, out: Any, progress: Any, log: Any, dist: Any) -> None:
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


# ----------------------------------------------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------------------------------------------


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

    Steps: check the arguments, every set file (read once) and every weights file; compare ``settings`` with the
    folder's ``settings.json`` (written on the first call); load the test images once per class subset; then for
    each cell of [`plan_cells`][hmdc_modules.evaluation.suite.plan_cells] either verify and reuse its stored record
    or run [`run_cell`][hmdc_modules.evaluation.train.run_cell] and store the record atomically; finally write the
    reports over every record of the folder with [`write_reports`][hmdc_modules.evaluation.report.write_reports].

    With a ``DistributedContext`` of $W > 1$ ranks (``hmdc_modules.distributed``; every rank of a ``torchrun`` job
    calls this with the same arguments), every rank checks the inputs and reads its output folder; a cell whose
    record no rank holds is pending, and rank $r$ trains the pending cells at positions $r$, $r + W$, ..., storing
    each record in its own folder as soon as it is done (an interrupted job keeps them). The records are then
    gathered on rank 0, which stores those its folder lacks and alone writes ``settings.json`` and the reports;
    every rank returns the same results and rows. Cells are trained independently and seeded, so the tables equal
    a one-process run's. On a shared filesystem all ranks use one folder; without one, rank 0's folder is the
    evaluation's, and records left in another rank's folder by an interrupted job are taken from it instead of
    being trained again. A failure on one rank (a missing file, an error while training) is raised on every rank
    once the ranks meet, after rank 0 stored the records finished so far.

    Args:
        sets: [`SetSpec`][hmdc_modules.evaluation.records.SetSpec] objects, or paths of set files or run folders
            (named after their folders).
        models: [`ModelSpec`][hmdc_modules.evaluation.records.ModelSpec] objects or model names.
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
        A [`SuiteReport`][hmdc_modules.evaluation.suite.SuiteReport]; ranks other than 0 get the same results,
        rows and counts, and no ``files``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``settings`` differ from the folder's (``precision`` included), a stored record was computed
            from another set file or model recipe, ``out`` is a file, a list is empty or repeats a name, or
            ``settings.precision`` is ``tf32`` and the device is not CUDA (refused before anything is written).
        FileNotFoundError: If a set, the CIFAR-10 test data or a weights file is missing.

    Examples:
        >>> report = run_suite(["runs/hmdc_cifar10", "runs/random_ipc1"], ["convnet", "resnet18"], [0, 1, 2],
        ...                    EvalSettings(epochs=300), "runs/eval/ipc1")  # doctest: +SKIP
        >>> report.files["markdown"]  # doctest: +SKIP
        PosixPath('runs/eval/ipc1/results.md')
    """
    from tqdm.auto import tqdm

    _check_arguments(settings, out, progress, log, dist)
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

    # 1. Check and read. Meeting here also keeps the other ranks from reading the records before rank 0 wrote
    # settings.json or relabelled them.
    plan, error = _Plan(), None
    try:
        train.check_precision_device(settings.precision, device)  # tf32 off CUDA: before anything is written
        plan = _prepare(sets, models, seeds, settings, out, ctx)
    except Exception as caught:  # raised below, on every rank
        error = caught
    first = meet(error, sorted(plan.held), ctx)
    first.raise_failure(error, ctx)

    # 2. Who does what; 3. train this rank's share.
    source, mine = _assign(plan.cells, first.payloads, ctx)
    trained_here: list[CellResult] = []
    try:
        trained_here = _train_share(plan, source, mine, settings, out, device=device, show=show, emit=emit, ctx=ctx)
    except Exception as caught:  # raised below, on every rank, once rank 0 stored what the others finished
        error = caught

    # 4. Rank 0 gathers the records it lacks (trained elsewhere, or only in another rank's folder), stores them
    # and writes the reports.
    outgoing: list[dict[str, Any]] = []
    if not ctx.is_main:
        outgoing = [r.to_dict() for r in trained_here]
        outgoing += [plan.held[key].to_dict() for key, holder in source.items() if holder == ctx.rank]
    second = meet(error, (len(trained_here), outgoing), ctx)
    trained = sum(count for count, _ in second.payloads)
    results: list[CellResult] = []
    rows: list[SummaryRow] = []
    files: dict[str, Path] = {}
    if ctx.is_main:
        try:
            done = _collect(plan, source, [records for _, records in second.payloads[1:]], out)
            done.update((r.key, r) for r in trained_here)
            if not second.failed:
                keys = {c.key for c in plan.cells}
                results = [done[c.key] for c in plan.cells] + [r for r in load_results(out) if r.key not in keys]
                rows, files = write_reports(results, out, settings=settings, title=title)
        except Exception as caught:
            if not second.failed:
                error = caught
            else:  # the first failure is the one to report; the records are stored as far as possible
                emit(f"could not store every gathered record: {caught}")
    if second.failed:  # every rank knows of it: no rank meets the others again
        second.raise_failure(error, ctx)

    # 5. Every rank returns rank 0's results.
    last = meet(error, [r.to_dict() for r in results] if ctx.is_main and ctx.enabled else None, ctx)
    last.raise_failure(error, ctx)
    if not ctx.is_main:
        results = [CellResult.from_dict(data) for data in last.payloads[0] or []]
        rows = summarize(results)
    return SuiteReport(results=results, rows=rows, files=files, trained=trained, skipped=len(plan.cells) - trained)

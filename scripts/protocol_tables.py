"""Tables shared by the protocol reports (scripts/dm_report.py, scripts/protocol_v2_report.py).

Sets are named ``ARM_sSEED`` or ``ARM_sSEED_uUPDATES`` (the protocol scripts' snapshot names). A cell's accuracy
is its final test accuracy (the protocols test once, after the last epoch); a set's accuracy on a model is the mean
over its training seeds; an arm's, the mean over its condensation seeds.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from hmdc_modules.evaluation import paired_difference

SET_NAME = re.compile(r"(?P<arm>[a-z_]+?)_s(?P<seed>\d+)(_u(?P<updates>\d{4}))?")

# (arm, model label) -> condensation seed -> accuracy (mean over training seeds); or updates instead of seed
Accuracies = dict[tuple[str, str], dict[int, float]]


def read_cells(results: Path) -> list[dict]:
    """The cells of an evaluation's results.json (none when it does not exist yet)."""
    return json.loads(results.read_text())["cells"] if results.is_file() else []


def accuracies(cells: list[dict], *, key: str = "seed", start_arm: str | None = None) -> Accuracies:
    """Mean final accuracy over training seeds, by (arm, model label) and by ``key`` (``seed`` or ``updates``);
    with ``start_arm``, a set stored at 0 updates counts as that arm (the protocol's ``init``)."""
    values: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for cell in cells:
        match = SET_NAME.fullmatch(cell["set_name"])
        if match is None or match[key] is None:
            continue
        arm = start_arm if start_arm and match["updates"] is not None and int(match["updates"]) == 0 else match["arm"]
        values[(arm, cell["model"]["label"])][int(match[key])].append(cell["final_accuracy"])
    return {k: {i: statistics.fmean(v) for i, v in by.items()} for k, by in values.items()}


def complete_seeds(acc: Accuracies, arms: tuple[str, ...], models: tuple[str, ...]) -> list[int]:
    """The seeds every (arm, model) pair has."""
    sets = [set(acc.get((arm, model), {})) for arm in arms for model in models]
    return sorted(set.intersection(*sets)) if sets else []


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = f"{statistics.stdev(values):.2f}" if len(values) > 1 else "n/a"
    return f"{statistics.fmean(values):.2f} ± {sd}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def accuracy_table(acc: Accuracies, arms: tuple[str, ...], models: tuple[str, ...]) -> list[str]:
    """Arm by model: mean ± standard deviation over condensation seeds, and the average over the models."""
    lines = [_row(["arm", *models, "average"]), "| --- |" + " ---: |" * (len(models) + 1)]
    for arm in arms:
        seeds = complete_seeds(acc, (arm,), models)
        averages = [statistics.fmean(acc[(arm, m)][s] for m in models) for s in seeds]
        lines.append(_row([f"{arm} ({len(seeds)} seeds)", *(mean_sd([acc[(arm, m)][s] for s in seeds]) for m in models),
                           mean_sd(averages)]))  # fmt: skip
    return lines


def paired_table(acc: Accuracies, reference: str, others: tuple[str, ...], models: tuple[str, ...]) -> list[str]:
    """``reference`` minus each other arm, paired by condensation seed: mean [95% interval], per model and for the
    average over the models."""
    lines = [_row(["against", *models, "average", "seeds"]), "| --- |" + " ---: |" * (len(models) + 1) + " --- |"]
    for other in others:
        seeds = complete_seeds(acc, (reference, other), models)
        if len(seeds) < 2:
            lines.append(_row([other, *(["fewer than 2 paired seeds"] * (len(models) + 1)), str(seeds)]))
            continue
        row = [other]
        for m in models:
            row.append(paired_difference([acc[(reference, m)][s] for s in seeds],
                                         [acc[(other, m)][s] for s in seeds]).format())  # fmt: skip
        avg = {a: [statistics.fmean(acc[(a, m)][s] for m in models) for s in seeds] for a in (reference, other)}
        row += [paired_difference(avg[reference], avg[other]).format(), ", ".join(map(str, seeds))]
        lines.append(_row(row))
    return lines


def times_table(out: Path, arms: tuple[str, ...]) -> list[str]:
    """Seconds per image update (from each run's metrics.csv) and the wall time of each stored segment."""
    lines = ["| arm | image updates timed | seconds per update, median (min to max) |", "| --- | ---: | ---: |"]
    for arm in arms:
        seconds: list[float] = []
        for metrics in sorted((out / "sets").glob(f"{arm}_s*/metrics.csv")):
            header, *rows = metrics.read_text().splitlines()
            column = header.split(",").index("seconds")
            seconds += [float(r.split(",")[column]) for r in rows]
        if seconds:
            lines.append(_row([arm, str(len(seconds)), f"{statistics.median(seconds):.2f} ({min(seconds):.2f} to "
                                                       f"{max(seconds):.2f})"]))  # fmt: skip
    return lines

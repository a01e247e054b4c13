"""Report of scripts/dm_protocol.sh: the curve, the number of updates it picks, accuracies and paired differences.

    python scripts/dm_report.py runs/dm_protocol            # Markdown on stdout (docs/results.md, DM section)
    python scripts/dm_report.py runs/dm_protocol --choose   # N: the protocol's rule applied to the curve

The rule (fixed before any result was seen): N is the smallest stored update count (0 excluded) at which each
condensed arm's ConvNet-3 accuracy on the curve is within --tolerance points of that arm's best curve point.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

from hmdc_modules.condensation import read_synthetic_set
from hmdc_modules.evaluation import paired_difference

ARMS = ("hmdc_dm", "single_model")
BASELINE = "random"
MODELS = ("convnet", "resnet18", "vit_tiny_patch16_224")
SNAPSHOT = re.compile(r"(?P<arm>[a-z_]+)_s(?P<seed>\d+)_u(?P<updates>\d{4})")


def cells(results: Path) -> list[dict]:
    if not results.is_file():
        return []
    return json.loads(results.read_text())["cells"]


def curve(out: Path) -> dict[str, dict[int, float]]:
    """ConvNet-3 accuracy of seed 0's stored sets, by arm and update count (the shared start counts for both)."""
    points: dict[str, dict[int, float]] = defaultdict(dict)
    for cell in cells(out / "curve" / "results.json"):
        match = SNAPSHOT.fullmatch(cell["set_name"])
        if match is None or cell["model"]["name"] != "convnet":
            continue
        points[match["arm"]][int(match["updates"])] = cell["final_accuracy"]
    if 0 in points.get("single_model", {}):
        points["hmdc_dm"].setdefault(0, points["single_model"][0])  # one start, evaluated once
    return points


def choose(points: dict[str, dict[int, float]], tolerance: float) -> int:
    counts = sorted({n for arm in ARMS for n in points.get(arm, {})} - {0})
    missing = [(arm, n) for arm in ARMS for n in counts if n not in points.get(arm, {})]
    if not counts or missing:
        raise SystemExit(f"the curve is incomplete (missing {missing or 'every point'}): cannot choose N yet")
    best = {arm: max(points[arm].values()) for arm in ARMS}
    for n in counts:
        if all(points[arm][n] >= best[arm] - tolerance for arm in ARMS):
            return n
    return counts[-1]


def movement(out: Path, arm: str, updates: int) -> float:
    """Mean absolute pixel change (0-255 scale) of seed 0's set since its start."""
    start = read_synthetic_set(out / "snapshots" / "single_model_s0_u0000.pt")
    now = read_synthetic_set(out / "snapshots" / f"{arm}_s0_u{updates:04d}.pt")
    std = torch.tensor(start.std).view(1, 3, 1, 1)
    return float(((now.images - start.images) * std).abs().mean() * 255)


def seconds_per_update(out: Path, arm: str) -> list[float]:
    values = []
    for metrics in sorted((out / "sets").glob(f"{arm}_s*/metrics.csv")):
        rows = metrics.read_text().splitlines()[1:]
        header = metrics.read_text().splitlines()[0].split(",")
        column = header.index("seconds")
        values += [float(r.split(",")[column]) for r in rows]
    return values


def report(out: Path) -> str:
    points, lines = curve(out), []
    n = int((out / "N").read_text()) if (out / "N").is_file() else None
    lines += ["### The curve (seed 0, ConvNet-3, one training seed)", "",
              "| image updates | hmdc_dm ConvNet-3 (%) | single_model ConvNet-3 (%) | hmdc_dm pixel change | "
              "single_model pixel change |", "| ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for updates in sorted({u for arm in ARMS for u in points.get(arm, {})}):
        row = [str(updates)] + [f"{points[arm].get(updates, float('nan')):.2f}" for arm in ARMS]
        row += [f"{movement(out, arm, updates):.2f}" for arm in ARMS]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"N = {n} (the rule of scripts/dm_protocol.sh)", ""]
    acc: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for cell in cells(out / "eval" / "results.json"):
        match = re.fullmatch(r"(?P<arm>[a-z_]+)_s(?P<seed>\d+)(_u\d{4})?", cell["set_name"])
        if match is not None:
            acc[(match["arm"], cell["model"]["name"])][int(match["seed"])] = cell["final_accuracy"]
    arms = (*ARMS, BASELINE)
    lines += ["### Accuracy (%), mean ± standard deviation over the condensation seeds", "",
              "| arm | " + " | ".join(MODELS) + " | average |", "| --- |" + " ---: |" * (len(MODELS) + 1)]  # fmt: skip
    for arm in arms:
        seeds = sorted(set.intersection(*(set(acc[(arm, m)]) for m in MODELS))) if acc else []
        per_seed_avg = [statistics.fmean(acc[(arm, m)][s] for m in MODELS) for s in seeds]
        row = [arm] + [_mean_sd([acc[(arm, m)][s] for s in seeds]) for m in MODELS] + [_mean_sd(per_seed_avg)]
        lines.append("| " + " | ".join(row) + " |")
    header = " | ".join(MODELS) + " | average |", "| --- |" + " ---: |" * (len(MODELS) + 1)
    lines += ["", "### hmdc_dm minus each arm, paired by condensation seed: mean [95% interval]", "",
              "| against | " + header[0], header[1]]  # fmt: skip
    for other in arms[1:]:
        seeds = sorted(set.intersection(*(set(acc[(a, m)]) for a in ("hmdc_dm", other) for m in MODELS)))
        if len(seeds) < 2:
            continue
        row = [other]
        for m in MODELS:
            row.append(paired_difference([acc[("hmdc_dm", m)][s] for s in seeds],
                                         [acc[(other, m)][s] for s in seeds]).format())  # fmt: skip
        avg = {a: [statistics.fmean(acc[(a, m)][s] for m in MODELS) for s in seeds] for a in ("hmdc_dm", other)}
        row.append(paired_difference(avg["hmdc_dm"], avg[other]).format())
        lines.append("| " + " | ".join(row) + f" |  <!-- seeds {seeds} -->")
    lines += [
        "",
        "### Condensation time",
        "",
        "| arm | image updates timed | seconds per update, median (min to max) |",
        "| --- | ---: | ---: |",
    ]
    for arm in ARMS:
        times = seconds_per_update(out, arm)
        if times:
            lines.append(f"| {arm} | {len(times)} | {statistics.median(times):.2f} ({min(times):.2f} to "
                         f"{max(times):.2f}) |")  # fmt: skip
    return "\n".join(lines)


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.2f} ± {sd:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the protocol's output folder (OUT of dm_protocol.sh)")
    parser.add_argument("--choose", action="store_true", help="print N, the number of updates the rule picks")
    parser.add_argument("--tolerance", type=float, default=0.5, help="points below an arm's best (default 0.5)")
    args = parser.parse_args()
    if args.choose:
        print(choose(curve(args.out), args.tolerance))
    else:
        print(report(args.out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

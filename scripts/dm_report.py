"""Report of scripts/dm_protocol.sh: the curve, the number of updates it picks, accuracies and paired differences.

    python scripts/dm_report.py runs/dm_protocol            # Markdown on stdout (docs/results.md, DM section)
    python scripts/dm_report.py runs/dm_protocol --choose   # N: the protocol's rule applied to the curve

The rule (fixed before any result was seen): N is the smallest stored update count (0 excluded) at which each
condensed arm's ConvNet-3 accuracy on the curve is within --tolerance points of that arm's best curve point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from protocol_tables import accuracies, accuracy_table, paired_table, read_cells, times_table

from hmdc_modules.condensation import read_synthetic_set

ARMS = ("hmdc_dm", "single_model")
MODELS = ("convnet", "resnet18", "vit_tiny_patch16_224")


def curve(out: Path) -> dict[str, dict[int, float]]:
    """ConvNet-3 accuracy of seed 0's stored sets, by arm and update count (the shared start counts for both)."""
    acc = accuracies(read_cells(out / "curve" / "results.json"), key="updates")
    points = {arm: dict(acc.get((arm, "convnet"), {})) for arm in ARMS}
    if 0 in points["single_model"]:
        points["hmdc_dm"].setdefault(0, points["single_model"][0])  # one start, evaluated once
    return points


def choose(points: dict[str, dict[int, float]], tolerance: float) -> int:
    counts = sorted({n for arm in ARMS for n in points[arm]} - {0})
    missing = [(arm, n) for arm in ARMS for n in counts if n not in points[arm]]
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


def report(out: Path) -> str:
    points = curve(out)
    n = int((out / "N").read_text()) if (out / "N").is_file() else None
    rates = sorted({json.loads(c.read_text())["lr_img"] for c in (out / "sets").glob("*/config.json")})
    lines = [f"Image learning rate (--lr-img, from the runs' config.json): {', '.join(map(str, rates))}", "",
             "### The curve (seed 0, ConvNet-3, one training seed)", "",
             "| image updates | hmdc_dm ConvNet-3 (%) | single_model ConvNet-3 (%) | hmdc_dm pixel change | "
             "single_model pixel change |", "| ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for updates in sorted({u for arm in ARMS for u in points[arm]}):
        row = [str(updates)] + [f"{points[arm].get(updates, float('nan')):.2f}" for arm in ARMS]
        row += [f"{movement(out, arm, updates):.2f}" for arm in ARMS]
        lines.append("| " + " | ".join(row) + " |")
    acc = accuracies(read_cells(out / "eval" / "results.json"))
    lines += ["", f"N = {n} (the rule of scripts/dm_protocol.sh)", "",
              "### Accuracy (%), mean ± standard deviation over the condensation seeds", "",
              *accuracy_table(acc, (*ARMS, "random"), MODELS), "",
              "### hmdc_dm minus each arm, paired by condensation seed: mean [95% interval]", "",
              *paired_table(acc, "hmdc_dm", ("single_model", "random"), MODELS), "",
              "### Condensation time", "", *times_table(out, ARMS)]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the protocol's output folder (OUT of dm_protocol.sh)")
    parser.add_argument("--choose", action="store_true", help="print N, the number of updates the rule picks")
    parser.add_argument("--tolerance", type=float, default=0.5, help="points below an arm's best (default 0.5)")
    args = parser.parse_args()
    print(choose(curve(args.out), args.tolerance) if args.choose else report(args.out))


if __name__ == "__main__":
    main()

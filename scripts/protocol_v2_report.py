"""Report of scripts/protocol_v2.sh (CPU protocol v2, the pretrained setting), in the order issue #12 asks for.

    python scripts/protocol_v2_report.py runs/protocol_v2            # Markdown on stdout
    python scripts/protocol_v2_report.py runs/protocol_v2 --choose   # N: the protocol's rule applied to the curve

1. The paper's motivating observation: the single-model sets against `init` and `random`, on the `_ft` models and
   on ConvNet-3, paired by condensation seed.
2. HMDC against each arm, paired by condensation seed: mean difference [95% interval] per model and on average.
3. The curve behind N, and the condensation times.

The rule for N (fixed before any result was seen): with F(u) the mean accuracy of ResNet18_ft and ViT-Tiny_ft on
the single-model set stored at u updates, N is the smallest u of 30, 100, 200 with F(next) - F(u) < 0.5 points;
if there is none, N = 200 (the budget's limit).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

from protocol_tables import accuracies, accuracy_table, paired_table, read_cells, times_table

FT_MODELS = ("resnet18_ft", "vit_tiny_ft")
MODELS = ("convnet", *FT_MODELS, "resnet18", "vit_tiny_patch16_224")
ARMS = ("hmdc", "single_model", "homogeneous", "init", "random")
CANDIDATES = (30, 100, 200, 300)  # the curve's stored points after the start; N is one of the first three


def curve(out: Path) -> dict[int, dict[str, float]]:
    """Accuracy of seed 0's single-model sets by update count and model."""
    acc = accuracies(read_cells(out / "curve" / "results.json"), key="updates")
    points: dict[int, dict[str, float]] = {}
    for (arm, model), by_updates in acc.items():
        if arm == "single_model":
            for updates, value in by_updates.items():
                points.setdefault(updates, {})[model] = value
    return points


def choose(points: dict[int, dict[str, float]], tolerance: float) -> int:
    missing = [u for u in CANDIDATES if not all(m in points.get(u, {}) for m in FT_MODELS)]
    if missing:
        raise SystemExit(f"the curve is incomplete (no _ft accuracies at {missing} updates): cannot choose N yet")
    f = {u: statistics.fmean(points[u][m] for m in FT_MODELS) for u in CANDIDATES}
    for u, later in itertools.pairwise(CANDIDATES):
        if f[later] - f[u] < tolerance:
            return u
    return CANDIDATES[-2]


def report(out: Path) -> str:
    acc = accuracies(read_cells(out / "eval" / "results.json"), start_arm="init")
    n = (out / "N").read_text().strip() if (out / "N").is_file() else "not chosen yet"
    points = curve(out)
    curve_models = ("convnet", *FT_MODELS)
    lines = ["### 1. The motivating observation: single-model sets against their start and random real images", "",
             "Single-model minus each arm, paired by condensation seed: mean [95% interval] (percentage points).", "",
             *paired_table(acc, "single_model", ("init", "random"), MODELS), "",
             "### Accuracy (%), mean ± standard deviation over the condensation seeds (each: mean of 2 training "
             "seeds)", "", *accuracy_table(acc, ARMS, MODELS), "",
             "### 2. HMDC minus each arm, paired by condensation seed: mean [95% interval]", "",
             *paired_table(acc, "hmdc", ARMS[1:], MODELS), "",
             f"### 3. The curve (single-model arm, seed 0, one training seed); N = {n}", "",
             "| image updates | " + " | ".join(curve_models) + " | mean of the _ft models |",
             "| ---: |" + " ---: |" * (len(curve_models) + 1)]  # fmt: skip
    for updates in sorted(points):
        row = [f"{points[updates].get(m, float('nan')):.2f}" for m in curve_models]
        ft = [points[updates][m] for m in FT_MODELS if m in points[updates]]
        lines.append(f"| {updates} | " + " | ".join(row) + f" | {statistics.fmean(ft) if ft else float('nan'):.2f} |")
    lines += ["", "### Condensation time", "", *times_table(out, ("hmdc", "single_model", "homogeneous"))]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the protocol's output folder (OUT of protocol_v2.sh)")
    parser.add_argument("--choose", action="store_true", help="print N, the number of updates the rule picks")
    parser.add_argument("--tolerance", type=float, default=0.5, help="the rise that still counts (default 0.5)")
    args = parser.parse_args()
    print(choose(curve(args.out), args.tolerance) if args.choose else report(args.out))


if __name__ == "__main__":
    main()

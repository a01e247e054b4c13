"""Report of scripts/precision_protocol.sh: the bf16-condensed set against the fp32-condensed one (issue #17).

    python scripts/precision_report.py runs/precision      # Markdown on stdout (docs/performance.md)

Both sets are HMDC seed 0 of the CPU protocol v1; only the condensation's arithmetic differs. Each is trained with
the same training seeds; the difference bf16 - fp32 is paired by training seed (mean and 95% Student-t interval),
and each set's standard deviation over the training seeds is the noise it is set against.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from protocol_tables import mean_sd, read_cells

from hmdc_modules.evaluation import paired_difference

PRECISIONS = ("fp32", "bf16")
MODELS = ("convnet", "resnet18", "vit_tiny_patch16_224")


def accuracies(out: Path) -> dict[str, dict[str, dict[int, float]]]:
    """precision -> model label -> training seed -> final accuracy."""
    acc: dict[str, dict[str, dict[int, float]]] = {p: {} for p in PRECISIONS}
    for p in PRECISIONS:
        for cell in read_cells(out / f"eval_{p}" / "results.json"):
            acc[p].setdefault(cell["model"]["label"], {})[int(cell["seed"])] = cell["final_accuracy"]
    return acc


def report(out: Path) -> str:
    acc = accuracies(out)
    seeds = sorted(set.intersection(*(set(acc[p].get(m, {})) for p in PRECISIONS for m in MODELS)))
    if len(seeds) < 2:
        raise SystemExit(f"fewer than 2 training seeds evaluated on both sets (have {seeds}): nothing to pair yet")
    columns = (*MODELS, "average")

    def values(p: str, column: str) -> list[float]:
        if column == "average":
            return [statistics.fmean(acc[p][m][s] for m in MODELS) for s in seeds]
        return [acc[p][column][s] for s in seeds]

    lines = [f"Final test accuracy (%), training seeds {', '.join(map(str, seeds))}: mean ± standard deviation over "
             "the training seeds, then bf16 - fp32 paired by training seed, mean [95% interval].", "",
             "| set | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]  # fmt: skip
    for p in PRECISIONS:
        row = [mean_sd(values(p, c)) for c in columns]
        lines.append(f"| condensed in {p} | " + " | ".join(row) + " |")
    row = [paired_difference(values("bf16", c), values("fp32", c)).format() for c in columns]
    lines.append("| bf16 - fp32 | " + " | ".join(row) + " |")
    lines += ["", "Per training seed (fp32 / bf16):", ""]
    for m in MODELS:
        pairs = ", ".join(f"seed {s}: {acc['fp32'][m][s]:.2f} / {acc['bf16'][m][s]:.2f}" for s in seeds)
        lines.append(f"- {m}: {pairs}")
    times = (out / "times.log").read_text().strip().splitlines() if (out / "times.log").is_file() else []
    lines += ["", "Condensation wall time (one thread each, the two side by side):", "", *(f"- {t}" for t in times)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the protocol's output folder (OUT of precision_protocol.sh)")
    print(report(parser.parse_args().out))


if __name__ == "__main__":
    main()

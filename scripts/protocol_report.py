"""Summarise the condensation side of scripts/cpu_protocol.sh: wall time and per-update time of each arm.

    python scripts/protocol_report.py runs/protocol

Prints a Markdown table (one row per arm, over its seeds), the condensation-time table of docs/results.md. The
accuracy tables come from the evaluation itself (runs/protocol/eval/results.md).
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the protocol's output folder (OUT of cpu_protocol.sh)")
    args = parser.parse_args()
    runs: dict[str, list[tuple[int, float, int, float]]] = defaultdict(list)
    for done in sorted(args.out.glob("sets/*_s*/DONE")):
        match = re.fullmatch(r"(.+)_s(\d+)", done.parent.name)
        if match is None:
            continue
        arm, seed = match.group(1), int(match.group(2))
        wall = float(done.read_text().split()[0])
        metrics = done.parent / "metrics.csv"
        updates, update_seconds = 0, 0.0
        if metrics.exists():
            with metrics.open() as f:
                rows = list(csv.DictReader(f))
            updates = len(rows)
            update_seconds = sum(float(r["seconds"]) for r in rows)
        runs[arm].append((seed, wall, updates, update_seconds))
    if not runs:
        raise SystemExit(f"no finished condensation under {args.out / 'sets'}")
    print("| arm | seeds | image updates | wall time per run (s), mean (min to max) | seconds per image update |")
    print("| --- | --- | ---: | ---: | ---: |")
    for arm, items in runs.items():
        walls = [w for _, w, _, _ in items]
        updates = {u for _, _, u, _ in items}
        per_update = [s / u for _, _, u, s in items if u]
        per = f"{statistics.mean(per_update):.1f}" if per_update else "-"
        seeds = ", ".join(str(s) for s, *_ in sorted(items))
        print(
            f"| {arm} | {seeds} | {'/'.join(map(str, sorted(updates))) if any(updates) else '-'} | "
            f"{statistics.mean(walls):.0f} ({min(walls):.0f} to {max(walls):.0f}) | {per} |"
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Regenerate the documentation's figures from real runs, so that none of them goes stale.

    python scripts/docs_figures.py run        # docs/assets/{balancer,grid}.png from a fresh tiny run of the example
    python scripts/docs_figures.py results    # docs/assets/results_accuracy.png from the results page's own table

``run`` runs ``examples/hmdc_cifar10.py`` with the tiny settings the home page quotes (a few minutes on 2 CPU
cores) into a temporary folder and copies its ``balancer.png`` and ``grid.png`` into ``docs/assets/``. ``results``
reads the "Accuracy" table of ``docs/results.md`` (the measured means and standard deviations, written there by the
evaluation suite) and draws it with the evaluation suite's own chart, ``plot_accuracy_bars``; the protocol tested
after the last epoch only, so best equals final and the chart has one panel.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "docs" / "assets"
# The home page quotes this command; keep the two in step (tests/test_docs.py checks it).
RUN_ARGS = (
    "--classes 0,1,2 --real-per-class 60 --iterations 2 --inner-steps 10 --batch-real 8 --model-steps 1 "
    "--projection-steps 1"
).split()
_FAMILIES = {"CNN": "cnn", "ViT": "vit", "all": "all"}
_AVERAGES = {"CNN average": "cnn", "ViT average": "vit", "Overall average": "all"}


def regenerate_run_figures(data_root: str) -> list[Path]:
    """Run the example at the home page's tiny settings and copy its balancer and grid figures into docs/assets."""
    with tempfile.TemporaryDirectory(prefix="hmdc-docs-run-") as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, str(REPO / "examples" / "hmdc_cifar10.py"), *RUN_ARGS]
        command += ["--data-root", data_root, "--out", str(out), "--quiet"]
        print("running:", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True, cwd=REPO)
        written = []
        for name in ("balancer.png", "grid.png"):
            shutil.copyfile(out / name, ASSETS / name)
            written.append(ASSETS / name)
    return written


def _number(cell: str) -> tuple[float, float | None]:
    text = cell.replace("*", "").strip()
    mean, _, std = text.partition("±")
    return float(mean), (float(std) if std.strip() not in ("", "n/a") else None)


def read_results_table(page: Path) -> list:
    """The rows of the first table under "## Accuracy" in the results page, as evaluation ``SummaryRow`` objects."""
    from hmdc_modules.evaluation.tables import SummaryRow

    text = page.read_text()
    section = text.split("\n## Accuracy\n", 1)[1]
    body = section.split("\n|", 1)[1]
    lines = ["|" + body.split("\n\n", 1)[0]][0].splitlines()  # the first table: its contiguous "|" lines
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    sets = header[2:]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        model = re.sub(r"\*\*(.*)\*\*", r"\1", cells[0])
        kind = "average" if model in _AVERAGES else "model"
        family = _AVERAGES.get(model) or _FAMILIES[cells[1]]
        for set_name, cell in zip(sets, cells[2:], strict=True):
            mean, std = _number(cell)
            rows.append(SummaryRow(set_name, model, kind, family, 3, 3 if kind == "model" else None,
                                   1 if kind == "model" else 0, mean, std, mean, std))  # fmt: skip
    return rows


def regenerate_results_chart(page: Path) -> Path:
    from hmdc_modules.evaluation import plot_accuracy_bars

    rows = read_results_table(page)
    title = "CPU-scale protocol v1: final test accuracy, mean ± std over 3 sets"
    return plot_accuracy_bars(rows, ASSETS / "results_accuracy.png", title=title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["run", "results"], help="which figures to regenerate")
    parser.add_argument("--data-root", default="data/cifar10", help="CIFAR-10 folder for `run` (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.what == "run":
        written = regenerate_run_figures(args.data_root)
    else:
        written = [regenerate_results_chart(REPO / "docs" / "results.md")]
    for path in written:
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

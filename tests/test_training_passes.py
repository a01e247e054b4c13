"""benchmarks/training_passes.py runs and prints one row per pass with a ratio (its figures are not judged)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_benchmark_prints_every_pass_with_a_ratio() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "training_passes.py"), "--batch", "2", "--rounds", "2"],
        env=dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if re.search(r"\d\.\d\dx$", line)]
    assert [row.split("  ")[0] for row in rows] == [
        "ViT-Tiny training step",
        "ViT-Tiny no-grad forward",
        "ConvNet-3 training step",
    ]

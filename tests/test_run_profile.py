"""benchmarks/run_profile.py: one outer iteration of the example, its wall time split into rows that add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--classes", "0,1", "--ipc", "1", "--factor", "2", "--inner-steps", "2", "--model-steps", "1",
    "--projection-steps", "2", "--batch-real", "4", "--batch-train", "8", "--select-every", "1",
    "--balance-interval", "1", "--model-b", "test_vit", "--real-per-class", "0", "--init", "real",
]  # fmt: skip


def test_profile_rows_add_up_and_count_the_calls(fake_cifar: Path, tmp_path: Path) -> None:
    out, figures = tmp_path / "run", tmp_path / "profile.json"
    args = ["--json", str(figures), "--", *TINY, "--data-root", str(fake_cifar), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run_profile.py"), *args],
        capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"),
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(figures.read_text())
    rows = data["seconds"]
    assert next(iter(rows)) == "class-steps" and list(rows)[-1] == "everything else"
    assert sum(rows.values()) == pytest.approx(data["outer_iteration_s"], rel=1e-9)
    assert all(v >= 0 for k, v in rows.items() if k != "everything else") and rows["class-steps"] > 0
    assert rows["everything else"] > -1e-3  # exclusive times never count a second twice
    calls = data["calls"]
    assert calls["class-steps"] == 4 and data["classes"] == 2  # 2 image updates x 2 classes
    assert calls["real-sample selection"] == 2 * 2 * 2  # per update and class: embed + k-means
    assert calls["model training"] == 2 * 3  # per update: training loss, its backward, the SGD step
    assert calls["image update, rest"] == 2 * 2  # per update: gradient normalisation, the images' SGD step
    assert calls["checkpoint and artefact I/O"] == 6  # set, grid, two plots, metrics, checkpoint
    assert calls["networks rebuilt"] == 5  # two models, two adapters, one decomposer
    assert calls["projection training"] == 2 * 2 * 4  # per update: 2 steps x (loss, zero_grad, backward, step)
    assert (out / "checkpoint.pt").is_file() and "one outer iteration:" in proc.stdout
    assert "| class-steps |" in proc.stdout
    assert not (tmp_path / "runs").exists()  # --out given after the defaults wins

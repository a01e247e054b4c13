"""The DM example, examples/hmdc_dm_cifar10.py, at a tiny size on generated data, as a separate process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_drawn_from_half

from hmdc_modules.condensation import load_checkpoint, read_synthetic_set

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "hmdc_dm_cifar10.py"
TINY = [
    "--classes", "0,1", "--ipc", "2", "--batch-real", "4", "--model-b", "test_vit", "--patch-size-b", "4",
    "--real-per-class", "0", "--projection-steps", "1", "--quiet",
]  # fmt: skip


def run(args: list[str], code: int = 0) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stderr


def rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(fake_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dm") / "run"
    run([*TINY, "--iterations", "3", "--checkpoint-every", "2", "--data-root", str(fake_cifar), "--out", str(out)])
    return out


def test_tiny_run_writes_every_artefact(uninterrupted: Path) -> None:
    for name in ("config.json", "synthetic.pt", "grid.png", "losses.png", "balancer.png", "metrics.csv",
                 "checkpoint.pt", "checkpoint.prev.pt"):  # fmt: skip
        assert (uninterrupted / name).is_file(), name
    assert json.loads((uninterrupted / "config.json").read_text())["iterations"] == 3
    table = rows(uninterrupted)
    assert [r["global_step"] for r in table] == ["0", "1", "2"]
    for r in table:
        assert all(torch.isfinite(torch.tensor(float(r[k]))) for k in ("dm_a", "dm_b", "md", "projection_loss"))
        assert max(float(r["w_dm_a"]), float(r["w_dm_b"]), float(r["w_md"])) == pytest.approx(1.0)
    assert load_checkpoint(uninterrupted / "checkpoint.prev.pt")["iteration"] == 2  # checkpoint every 2, and the end
    stored = read_synthetic_set(uninterrupted / "synthetic.pt")
    assert stored.images.shape == (4, 3, 32, 32) and stored.labels.tolist() == [0, 0, 1, 1] and stored.iteration == 3
    first = load_checkpoint(uninterrupted / "checkpoint.prev.pt")["synthetic"]
    assert not torch.equal(first, load_checkpoint(uninterrupted / "checkpoint.pt")["synthetic"])  # images moved


def test_resume_extends_a_run_bitwise(uninterrupted: Path, fake_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run([*TINY, "--iterations", "1", "--checkpoint-every", "2", "--data-root", str(fake_cifar), "--out", str(out)])
    assert json.loads((out / "config.json").read_text())["iterations"] == 1
    run(["--resume", "--out", str(out), "--iterations", "3", "--quiet", "--data-root", str(fake_cifar)])
    a, b = load_checkpoint(uninterrupted / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    assert torch.equal(a["synthetic"], b["synthetic"])
    assert a["balancer"]["accumulator"].equal(b["balancer"]["accumulator"])
    assert rows(uninterrupted) == rows(out)
    assert (uninterrupted / "synthetic.pt").read_bytes() == (out / "synthetic.pt").read_bytes()
    assert json.loads((out / "config.json").read_text())["iterations"] == 3


def test_zero_iterations_write_the_start_and_a_resume_continues_it_bitwise(uninterrupted: Path, fake_cifar: Path,
                                                                           tmp_path: Path) -> None:  # fmt: skip
    """``--iterations 0`` stores the initial set (a curve's first point); resuming it equals the uninterrupted run."""
    out = tmp_path / "run"
    run([*TINY, "--iterations", "0", "--checkpoint-every", "2", "--data-root", str(fake_cifar), "--out", str(out)])
    start = read_synthetic_set(out / "synthetic.pt")
    assert start.iteration == 0 and start.images.shape == (4, 3, 32, 32)
    assert load_checkpoint(out / "checkpoint.pt")["metrics"] == []
    run(["--resume", "--out", str(out), "--iterations", "3", "--quiet", "--data-root", str(fake_cifar)])
    assert (uninterrupted / "synthetic.pt").read_bytes() == (out / "synthetic.pt").read_bytes()
    assert rows(uninterrupted) == rows(out)
    assert not torch.equal(start.images, read_synthetic_set(out / "synthetic.pt").images)


def test_a_run_is_refused_and_a_clash_named(uninterrupted: Path, fake_cifar: Path) -> None:
    before = {p.name: p.read_bytes() for p in uninterrupted.iterdir()}
    err = run([*TINY, "--data-root", str(fake_cifar), "--out", str(uninterrupted)], code=2)
    assert "holds a run; continue it with --resume or replace it with --overwrite" in err
    err = run(["--resume", "--out", str(uninterrupted), "--ipc", "5", "--data-root", str(fake_cifar)], code=2)
    assert "--ipc (checkpoint: 2, given: 5)" in err and "Traceback" not in err
    err = run(["--resume", "--out", str(uninterrupted), "--iterations", "2", "--data-root", str(fake_cifar)], code=2)
    assert "--iterations: the run has done 3, got 2" in err
    assert {p.name: p.read_bytes() for p in uninterrupted.iterdir()} == before


@pytest.mark.parametrize(
    ("switch", "losses"),
    [("--single-model", {"dm_a"}), ("--no-distillation", {"dm_a", "dm_b"}), ("--no-balancer", {"dm_a", "dm_b", "md"})],
)
def test_arms(fake_cifar: Path, tmp_path: Path, switch: str, losses: set[str]) -> None:
    out = tmp_path / "run"
    run([*TINY, "--iterations", "1", "--data-root", str(fake_cifar), "--out", str(out), switch])
    (row,) = rows(out)
    assert {k for k in row if k in ("dm_a", "dm_b", "md")} == losses
    if switch != "--no-distillation":  # one loss, or weights switched off: every weight is 1
        assert all(float(row[f"w_{n}"]) == 1.0 for n in losses)
    assert (out / "balancer.png").exists() == (switch == "--no-distillation")


@pytest.mark.parametrize(
    "bad",
    [["--ipc", "0"], ["--lr-img", "0"], ["--momentum-img", "1"], ["--distance", "dc"], ["--weights-b", "no.pt"],
     ["--resume", "--overwrite"], ["--model-b", "nope"], ["--classes", "12"], ["--lr-projection", "nan"]],
)  # fmt: skip
def test_bad_flags_give_one_line_and_write_nothing(fake_cifar: Path, tmp_path: Path, bad: list[str]) -> None:
    err = run([*TINY, "--data-root", str(fake_cifar), "--out", str(tmp_path / "run"), *bad], code=2)
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert bad[0] in lines[0] or "--overwrite" in lines[0]
    assert not (tmp_path / "run").exists()


def test_real_subset_condenses_from_that_half_only(fake_cifar: Path, tmp_path: Path) -> None:
    """``--real-subset C`` (protocol v2) starts from images of the C half, never of P."""
    out = tmp_path / "c"
    run([*TINY, "--init", "real", "--ipc", "3", "--real-subset", "C", "--iterations", "0",
         "--data-root", str(fake_cifar), "--out", str(out)])  # fmt: skip
    assert_drawn_from_half(read_synthetic_set(out / "synthetic.pt").images, fake_cifar, "C")

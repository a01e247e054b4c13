"""benchmarks/step.py measures what it says: its naive baseline computes the same image gradient as the example's
class-step, and its phase-by-phase FLOP count adds up to the whole step's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def step() -> ModuleType:
    """benchmarks/ is a folder of scripts; imported as a namespace package from the repository root."""
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks import step as module
    finally:
        sys.path.remove(str(REPO))
    return module


@pytest.fixture()
def bench(step: ModuleType):
    torch.manual_seed(0)
    return step.Bench.build("tiny", torch.device("cpu"))


@pytest.mark.parametrize("sample", [False, True], ids=["plain", "sampling"])
def test_naive_step_gives_the_same_image_gradient(bench, sample: bool) -> None:
    bench.naive(sample)
    naive = bench.syn.grad.clone()
    bench.balancer.reset()
    bench.ours(sample)
    ours = bench.syn.grad.clone()
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, naive, rtol=1e-4, atol=1e-6)


def test_phases_add_up_to_the_step(step: ModuleType, bench) -> None:
    whole = step.count_flops(lambda: bench.ours(False)) / 1e9
    phases = bench.phase_flops()
    assert set(phases) == {"forward", "real gradients", "synthetic gradients", "image backward"}
    assert all(value > 0 for value in phases.values())
    assert sum(phases.values()) == pytest.approx(whole, rel=1e-6)


def test_naive_step_counts_more_flops(step: ModuleType, bench) -> None:
    ours = step.count_flops(lambda: bench.ours(False))
    naive = step.count_flops(lambda: bench.naive(False))
    assert naive > ours


def test_rejects_unknown_shapes() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step.py"), "--shapes", "huge"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "--shapes must name some of" in proc.stderr and "Traceback" not in proc.stderr


def test_fidelity_of_fp32_against_itself_is_exact_and_bf16_is_not(bench) -> None:
    """The fidelity figures compare two runs from one balancer state: fp32 against fp32 is bitwise the same step."""
    same = bench.fidelity("fp32")
    assert same["grad_cosine"] == pytest.approx(1.0, abs=1e-12) and same["grad_rel_error"] == 0.0
    assert all(v == 0.0 for v in [*same["loss_rel_error"].values(), *same["weight_rel_error"].values()])
    assert bench.balancer.num_samples.tolist() == [0]  # the balancer's state was restored
    low = bench.fidelity("bf16")
    assert 0.9 < low["grad_cosine"] < 1.0 and low["grad_rel_error"] > 0
    assert set(low["loss_rel_error"]) == set(bench.nets.loss_names) and bench.nets.precision == "fp32"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--precision", "fp16"], "--precision must name some of ['fp32', 'bf16', 'tf32'], got 'fp16'"),
        (["--precision", "tf32", "--device", "cpu"], "--precision tf32 needs a CUDA device, got 'cpu'"),
        (["--kinds", "fast"], "--kinds must name some of ['plain', 'sampling'], got 'fast'"),
    ],
)
def test_rejects_bad_precision_and_kinds(flags: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step.py"), *flags], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "error:" in line] == [
        next(line for line in proc.stderr.splitlines() if message in line)
    ]

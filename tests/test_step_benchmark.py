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

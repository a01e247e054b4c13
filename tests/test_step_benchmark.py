"""benchmarks/step.py measures what it says: its naive baseline computes the same image gradient as the example's
class-step, and its phase-by-phase FLOP count adds up to the whole step's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def step() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hmdc_step_benchmark", REPO / "benchmarks" / "step.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def bench(step: ModuleType):
    torch.manual_seed(0)
    return step.Bench.build("tiny", step.load_example(), torch.device("cpu"))


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


def test_rejects_unknown_shapes(step: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        step.main(["--shapes", "huge"])
    assert info.value.code == 2
    assert "--shapes must name some of" in capsys.readouterr().err

"""The README is the first thing a user runs: its commands and its usage example must hold."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_starts_with_the_setup_and_test_commands() -> None:
    first = code_blocks("bash")[0].strip().splitlines()
    assert first == ["pip install -e '.[dev]'", "python -m pytest -q"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "\npip install -e '.[dev]'\n" in ci and "\npython -m pytest -q\n" in ci


def test_readme_usage_example_runs_as_written() -> None:
    (example,) = code_blocks("python")
    assert len([line for line in example.splitlines() if line.strip()]) <= 15
    torch.manual_seed(0)
    namespace: dict[str, object] = {}
    exec(compile(example, str(README), "exec"), namespace)
    syn = namespace["syn"]
    balancer = namespace["balancer"]
    assert isinstance(syn, torch.Tensor) and syn.grad is not None
    assert torch.isfinite(syn.grad).all() and syn.grad.abs().sum() > 0
    weights = balancer.weights(0)
    assert weights.shape == (3,) and float(weights.max()) == 1.0

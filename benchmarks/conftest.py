"""Shared setup for the pytest-benchmark suite (run with ``python -m pytest benchmarks/ --benchmark-only``).

The repository's ``pyproject.toml`` sets ``testpaths = ["tests"]``, so a plain ``pytest`` never collects this
folder; naming it explicitly on the command line does, and the files here follow pytest's default ``test_*.py``
pattern so no ini override is needed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

SEED = 0
NUM_THREADS = 2


@pytest.fixture(autouse=True)
def _deterministic_cpu() -> Iterator[None]:
    """Seed torch and pin it to two threads for every benchmark, restoring the thread count afterwards."""
    threads = torch.get_num_threads()
    torch.manual_seed(SEED)
    torch.set_num_threads(NUM_THREADS)
    yield
    torch.set_num_threads(threads)

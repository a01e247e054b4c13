"""Repository-wide pytest set-up: which tests are the slow end-to-end ones (the fixtures live in tests/conftest.py)."""

from __future__ import annotations

import pytest

# End-to-end tests: whole runs of the examples and the evaluation suite in subprocesses, several processes under
# torchrun, the strict site build. They run in CI as their own step (`python -m pytest -q -m slow`); the default
# `python -m pytest -q` leaves them out (pyproject.toml: -m "not slow") to stay within its 5-minute budget.
SLOW_MODULES = frozenset(
    {"test_example.py", "test_dm_example.py", "test_distributed.py", "test_evaluation_distributed.py"}
)
SLOW_TESTS = frozenset(
    {
        "test_docs.py::test_mkdocs_build_strict",
        "test_evaluation.py::test_suite_end_to_end_writes_every_report",
        "test_step_benchmark.py::test_phases_add_up_to_the_step",
    }
)


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m filter sees the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.name
        if module in SLOW_MODULES or f"{module}::{getattr(item, 'originalname', item.name)}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)

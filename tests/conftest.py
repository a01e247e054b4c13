"""Shared fixtures: small generated data, so no test needs the internet or ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10"


@pytest.fixture(autouse=True)
def _small_thread_count():
    """Two cores: keep each test on them deterministically."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


def write_fake_cifar(root: Path, classes: tuple[int, ...] = (0, 1), per_class: int = 12, seed: int = 0) -> Path:
    """An image-folder CIFAR-10 look-alike: ``root/{train,test}/<class>/<i>.png`` with class-dependent colours."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", max(2, per_class // 4))):
        for c in classes:
            folder = root / split / CLASS_NAMES[c]
            folder.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 256, size=3)
            for i in range(n):
                noise = rng.integers(-60, 60, size=(32, 32, 3))
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def fake_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-class image-folder CIFAR-10 (12 training images a class)."""
    return write_fake_cifar(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="module")
def random_set(fake_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding the random-real baseline: 2 real images of each of the 2 classes (one per module)."""
    from hmdc_modules.evaluation import make_random_real_set

    folder = tmp_path_factory.mktemp("random_ipc2")
    make_random_real_set(fake_cifar, folder, ipc=2, seed=0, progress=False)
    return folder


def assert_drawn_from_half(images: torch.Tensor, root: Path, half: str) -> None:
    """Every (normalised) image is an image of ``half`` ("C" or "P") of the training split under ``root``, and
    none is one of the other half's."""
    from hmdc_modules.condensation import CIFAR10_MEAN, CIFAR10_STD, load_cifar10, normalize

    other = {"C": "P", "P": "C"}[half]
    halves = {h: normalize(load_cifar10(root, subset=h, progress=False)[0], CIFAR10_MEAN, CIFAR10_STD)
              for h in (half, other)}  # fmt: skip
    for image in images:
        assert any(torch.allclose(image, x, atol=1e-6) for x in halves[half])
        assert not any(torch.allclose(image, x, atol=1e-6) for x in halves[other])


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

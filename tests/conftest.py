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

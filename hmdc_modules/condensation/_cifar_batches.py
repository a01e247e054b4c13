"""CIFAR-10's pickled batches (``root/cifar-10-batches-py``): a safe reader, a download that leaves nothing behind."""

from __future__ import annotations

import contextlib
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hmdc_modules._validation import describe

TORCHVISION_FOLDER = "cifar-10-batches-py"
BATCH_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
SIDE = 32


class DatasetDownloadError(ConnectionError):
    """A dataset could not be downloaded (no network, or a damaged archive); nothing was left behind."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batch files that only resolves the few globals a pickled numpy array needs."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        # The original files were written by Python 2 / numpy 1 and name ``numpy.core``; numpy 2 calls it ``_core``.
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}': not part of a CIFAR batch file")
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            # numpy 1.x has no ``numpy._core``: fall back to the historical name.
            return super().find_class(module.replace("numpy._core", "numpy.core"), name)


def read_batch_file(path: Path) -> tuple[Tensor, Tensor]:
    """Read one pickled CIFAR batch: (images uint8 (n, 3, 32, 32), labels int64 (n,))."""
    import numpy as np

    try:
        with path.open("rb") as handle:
            entry = _BatchUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise ValueError(f"CIFAR-10 batch file '{path}' could not be read as a CIFAR batch: {error}") from None
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"CIFAR-10 batch file '{path}' must hold a dict with 'data' and 'labels', got {keys}")
    data, labels = entry["data"], entry["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        got = f"shape {data.shape} and dtype {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"CIFAR-10 batch file '{path}': 'data' must be a uint8 array of shape (n, 3072), got {got}")
    if not isinstance(labels, list | tuple | np.ndarray) or len(labels) != data.shape[0]:
        count = len(labels) if isinstance(labels, list | tuple | np.ndarray) else describe(labels)
        raise ValueError(f"CIFAR-10 batch file '{path}': {data.shape[0]} images but {count} labels")
    # Each row holds the red, then green, then blue 32x32 plane: already channels-first.
    images = torch.from_numpy(data.reshape(-1, 3, SIDE, SIDE).copy())
    return images, torch.as_tensor(list(labels), dtype=torch.int64)


def read_torchvision_layout(root: Path, split: str, missing: Any) -> tuple[Tensor, Tensor]:
    """All batch files of ``split``; ``missing(detail)`` builds the error for an absent file."""
    folder = root / TORCHVISION_FOLDER
    parts = []
    for name in BATCH_FILES[split]:
        path = folder / name
        if not path.is_file():
            raise missing(f"'{folder}' exists but lacks the batch file '{name}'")
        parts.append(read_batch_file(path))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _first_line(error: BaseException) -> str:
    reason = getattr(error, "reason", None)  # urllib.error.URLError keeps the cause here
    text = str(reason if reason is not None else error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def download_torchvision(root: Path, split: str) -> tuple[Tensor, Tensor]:
    """Fetch CIFAR-10 with torchvision into ``root``; on any failure remove what the attempt created."""
    created = root  # the topmost folder this call may create
    while not created.parent.exists() and created.parent != created:
        created = created.parent
    existed = created.exists()
    before = set(root.iterdir()) if root.is_dir() else set()
    try:
        from torchvision.datasets import CIFAR10

        dataset = CIFAR10(str(root), train=split == "train", download=True)
    except BaseException as error:
        if not existed:
            shutil.rmtree(created, ignore_errors=True)
        elif root.is_dir():
            for entry in set(root.iterdir()) - before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
        if not isinstance(error, OSError | RuntimeError):  # KeyboardInterrupt, bugs: cleaned up, then as they are
            raise
        raise DatasetDownloadError(
            f"could not download CIFAR-10 into '{root}' ({_first_line(error)}); nothing was kept. Connect to the "
            f"internet and retry, or put the data there yourself as an image folder '{root / split}/<class>/*.png'"
        ) from None
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    return images, torch.as_tensor(dataset.targets, dtype=torch.int64)

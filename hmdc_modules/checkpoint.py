"""Atomic checkpoint files: a run killed at any moment leaves either the old file or the new one, never half."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX file systems, so a crash or ``SIGKILL`` during the write leaves any previous
    checkpoint at ``path`` intact. The parent folder is created if needed.

    Args:
        state: A dict of tensors and plain Python values (so that it loads with ``weights_only=True``).
        path: Destination file.

    Returns:
        The destination path.

    Raises:
        TypeError: If ``state`` is not a dict.
    """
    if not isinstance(state, dict):
        raise TypeError(f"`state` must be a dict, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by [`save_checkpoint`][hmdc_modules.checkpoint.save_checkpoint] onto the CPU.

    Loads with ``weights_only=True``: only tensors and plain Python values are accepted, never pickled code.

    Args:
        path: The checkpoint file.

    Returns:
        The stored dict.

    Raises:
        FileNotFoundError: If there is no file at ``path``.
        ValueError: If the file does not hold a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path`: no checkpoint at {str(path)!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"`path`: {str(path)!r} does not hold a checkpoint dict, got {type(state).__name__}")
    return state

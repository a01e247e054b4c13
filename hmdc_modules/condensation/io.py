"""Atomic checkpoint files: a run killed at any moment leaves either the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_torch_save", "load_checkpoint", "save_checkpoint"]


def atomic_torch_save(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` with ``torch.save`` to a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX file systems: a crash or ``SIGKILL`` at any moment leaves either the previous file
    or the new one at ``path``, never a partial file, and no temporary file behind on errors.

    Args:
        payload: What to save.
        path: Destination file; its folder is created if needed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # O_EXCL: never clobber; mode 0o666 lets the umask decide the final permissions, like a plain open().
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows it
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


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
    atomic_torch_save(state, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by [`save_checkpoint`][hmdc_modules.condensation.io.save_checkpoint] onto the CPU.

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

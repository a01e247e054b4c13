"""Arithmetic precision of a condensation run: float32, bfloat16 autocast, or TF32 matmuls on CUDA.

Only the arithmetic changes: ``bf16`` runs the forward passes (and the gradients taken inside the context) under
``torch.autocast(dtype=torch.bfloat16)``, which computes matmuls and convolutions in bfloat16 from float32
parameters; ``tf32`` lets CUDA's matmuls and cuDNN convolutions use TensorFloat-32. Parameters, images, optimiser
states and the balancer's statistics are never converted: they stay float32.

Examples:
    >>> import torch
    >>> x = torch.randn(4, 8)
    >>> with precision_context("bf16", x.device):
    ...     (x @ x.T).dtype
    torch.bfloat16
    >>> with precision_context("fp32", "cpu"):
    ...     (x @ x.T).dtype
    torch.float32
    >>> check_precision("fp16")
    Traceback (most recent call last):
    ...
    ValueError: `precision` must be one of 'fp32', 'bf16', 'tf32', got 'fp16'
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["PRECISIONS", "check_precision", "precision_context"]

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "tf32")
"""The precision names: ``fp32`` (the default), ``bf16`` (autocast to bfloat16), ``tf32`` (CUDA only)."""


def check_precision(precision: Any, name: str = "precision") -> str:
    """``precision`` if it is one of [`PRECISIONS`][hmdc_modules.condensation.precision.PRECISIONS].

    Args:
        precision: The name to check.
        name: The argument's name in the message (e.g. ``--precision``).

    Returns:
        The name.

    Raises:
        TypeError: If ``precision`` is not a string.
        ValueError: If it is not a known precision.

    Examples:
        >>> check_precision("bf16")
        'bf16'
    """
    if not isinstance(precision, str):
        raise TypeError(f"`{name}` must be a string, one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision


def _device_type(device: Any) -> str:
    if isinstance(device, torch.Tensor):
        device = device.device
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError):
        raise TypeError(f"`device` must be a torch.device, a device string or a tensor, got {device!r}") from None


@contextlib.contextmanager
def precision_context(precision: str, device: Any) -> Iterator[None]:
    """The context that computes in ``precision`` on ``device``.

    - ``fp32``: nothing changes (and TF32 stays as the process set it);
    - ``bf16``: ``torch.autocast(device_type, dtype=torch.bfloat16)`` (CPU and CUDA);
    - ``tf32``: on CUDA, ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32`` on
      inside the context and restored after it.

    Run the backward pass of a loss computed inside the context outside it, as ``torch.autocast`` advises.

    Args:
        precision: One of ``PRECISIONS``.
        device: The device the computation runs on (a ``torch.device``, a string, or a tensor on it).

    Raises:
        TypeError: If ``precision`` is not a string or ``device`` is not a device.
        ValueError: If ``precision`` is unknown, or ``tf32`` is asked for on a device other than CUDA.

    Examples:
        >>> with precision_context("tf32", "cpu"):
        ...     pass
        Traceback (most recent call last):
        ...
        ValueError: `precision` 'tf32' needs a CUDA device, got 'cpu' (use 'fp32' or 'bf16')
    """
    check_precision(precision)
    kind = _device_type(device)
    if precision == "tf32" and kind != "cuda":
        raise ValueError(f"`precision` 'tf32' needs a CUDA device, got {kind!r} (use 'fp32' or 'bf16')")
    if precision == "fp32":
        yield
    elif precision == "bf16":
        with torch.autocast(kind, dtype=torch.bfloat16):
            yield
    else:
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

"""Pixel normalisation: map between pixels in $[0, 1]$ and the channel-standardised space synthetic images live in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hmdc_modules._validation import check_tensor, describe
from hmdc_modules.condensation.datasets import CIFAR10_MEAN, CIFAR10_STD

__all__ = ["denormalize", "normalize"]


def _channel_stats(name: str, values: Any, channels: int, like: Tensor, *, positive: bool = False) -> Tensor:
    if isinstance(values, Tensor):
        if values.ndim != 1:
            raise ValueError(f"`{name}` must be a 1-D tensor or a sequence of numbers, got shape {tuple(values.shape)}")
        values = values.tolist()
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"`{name}` must be a sequence of {channels} numbers, got {describe(values)}")
    if len(values) != channels or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ValueError(f"`{name}` must hold one number per channel ({channels}), got {list(values)!r}")
    if positive and not all(v > 0 for v in values):
        raise ValueError(f"`{name}` must be > 0 in every channel, got {list(values)!r}")
    return torch.tensor([float(v) for v in values], dtype=like.dtype, device=like.device).reshape(channels, 1, 1)


def normalize(
    images: Tensor,
    mean: Sequence[float] | Tensor = CIFAR10_MEAN,
    std: Sequence[float] | Tensor = CIFAR10_STD,
) -> Tensor:
    r"""Standardise images channel by channel: $(x - \mu_c) / \sigma_c$.

    ``uint8`` images are first scaled to $[0, 1]$ (divided by 255, as ``float32``); floating images are taken to be
    in $[0, 1]$ already (not checked) and keep their dtype. The result is on the device of ``images`` and, for
    floating input, differentiable.

    Args:
        images: Pixels, channels at dimension $-3$.
        mean: Per-channel mean $\mu$ (default: CIFAR-10's).
        std: Per-channel standard deviation $\sigma > 0$ (default: CIFAR-10's).

    Returns:
        The standardised images.

    Raises:
        TypeError: If ``images`` is not a tensor of dtype ``uint8`` or floating, or ``mean``/``std`` is not a
            sequence of numbers.
        ValueError: If ``images`` has fewer than 3 dimensions, or ``mean``/``std`` does not have one entry per
            channel, or ``std`` is not positive.

    Shape:
        - images: $(*, C, H, W)$
        - output: same shape

    Examples:
        >>> x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
        >>> normalize(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).unique()
        tensor([1.])
    """
    check_tensor("images", images)
    if images.ndim < 3:
        raise ValueError(f"`images` must have at least 3 dimensions (*, C, H, W), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.to(torch.float32) / 255.0
    elif not images.is_floating_point():
        raise TypeError(f"`images` must have dtype uint8 or a floating dtype, got {images.dtype}")
    channels = images.shape[-3]
    m = _channel_stats("mean", mean, channels, images)
    s = _channel_stats("std", std, channels, images, positive=True)
    return (images - m) / s


def denormalize(
    x: Tensor,
    mean: Sequence[float] | Tensor = CIFAR10_MEAN,
    std: Sequence[float] | Tensor = CIFAR10_STD,
) -> Tensor:
    r"""Undo [`normalize`][hmdc_modules.condensation.normalization.normalize]: $x \sigma_c + \mu_c$.

    The result is in pixel space ($[0, 1]$ for images that were normalised from there), not clamped.

    Args:
        x: Standardised images, floating point, channels at dimension $-3$.
        mean: Per-channel mean $\mu$ used for normalising (default: CIFAR-10's).
        std: Per-channel standard deviation $\sigma > 0$ (default: CIFAR-10's).

    Returns:
        The images in pixel space, same dtype and device as ``x``.

    Raises:
        TypeError: If ``x`` is not a floating tensor or ``mean``/``std`` is not a sequence of numbers.
        ValueError: If ``x`` has fewer than 3 dimensions, ``mean``/``std`` does not have one entry per channel, or
            ``std`` is not positive.

    Shape:
        - x: $(*, C, H, W)$
        - output: same shape

    Examples:
        >>> pixels = torch.rand(2, 3, 4, 4)
        >>> torch.allclose(denormalize(normalize(pixels)), pixels, atol=1e-6)
        True
    """
    check_tensor("x", x, floating=True)
    if x.ndim < 3:
        raise ValueError(f"`x` must have at least 3 dimensions (*, C, H, W), got shape {tuple(x.shape)}")
    channels = x.shape[-3]
    m = _channel_stats("mean", mean, channels, x)
    s = _channel_stats("std", std, channels, x, positive=True)
    return x * s + m

"""Multi-formation: packing several small images into one stored image and unpacking them again.

Multi-formation (from IDC, "Dataset Condensation via Efficient Synthetic-Data Parameterization") stores
$f^2$ low-resolution images in the $f \\times f$ grid of one full-size synthetic image. With factor $f = 2$, a
stored $32 \\times 32$ image holds four $16 \\times 16$ images; decoding splits the grid and upsamples every
tile back to the training size, and every tile inherits the stored image's label.

Layout, for a stored batch of $N$ images and tile $(r, c)$ (row $r$, column $c$, both in $[0, f)$):

- [`encode_formation`][hmdc_modules.condensation.formation.encode_formation] puts input image $(r f + c) N + j$ into
  tile $(r, c)$ of stored image $j$. For $f = 2$: top-left $j$, top-right $j + N$, bottom-left $j + 2N$,
  bottom-right $j + 3N$.
- [`decode_formation`][hmdc_modules.condensation.formation.decode_formation] emits tile $(r, c)$ of stored image $j$ at
  output index $(r f + c) N + j$ (row-major over tiles), so decoding lays tiles out exactly as encoding took
  them. The reference implementation emits the tiles column-major (all top-left, then all bottom-left, then all
  top-right, ...); since every tile of a stored image shares its label, the order does not change training.
- [`decode_formation_labels`][hmdc_modules.condensation.formation.decode_formation_labels] repeats the labels in that
  same order.

All resizing is bilinear with ``align_corners=True``, as in the reference, and every function is differentiable
with respect to the images.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from hmdc_modules._validation import check_positive_int, check_tensor, describe

__all__ = ["decode_formation", "decode_formation_labels", "encode_formation"]


def _check_divisible(name: str, images: Tensor, factor: int) -> tuple[int, int]:
    height, width = images.shape[-2:]
    if height % factor != 0 or width % factor != 0:
        raise ValueError(
            f"`{name}` height and width must be divisible by `factor`={factor}, got spatial size ({height}, {width})"
        )
    return height // factor, width // factor


def _check_size(size: Any) -> tuple[int, int]:
    if not isinstance(size, tuple | list) or len(size) != 2:
        raise TypeError(f"`size` must be a (height, width) tuple of two ints, got {describe(size)}")
    for value in size:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`size` must be a (height, width) tuple of two ints, got {tuple(size)!r}")
        if value < 1:
            raise ValueError(f"`size` entries must be >= 1, got {tuple(size)!r}")
    return int(size[0]), int(size[1])


def encode_formation(images: Tensor, factor: int) -> Tensor:
    r"""Pack $f^2 N$ images into $N$ images, each an $f \times f$ grid of downsampled images.

    Every input image is resized bilinearly (``align_corners=True``) to $(H / f, W / f)$. Stored image $j$ then
    holds input image $(r f + c) N + j$ in tile $(r, c)$:

    $$S_j[:, rh:(r+1)h,\ cw:(c+1)w] = \mathrm{resize}_{h \times w}\big(X_{(rf + c)N + j}\big),
    \qquad h = H/f,\ w = W/f.$$

    For $f = 1$ the input is returned unchanged (the same tensor object).

    Args:
        images: The images to pack, $f^2 N$ of them, floating point.
        factor: The formation factor $f \ge 1$ (tiles per side).

    Returns:
        The packed images, same dtype and device as ``images``.

    Raises:
        TypeError: If ``images`` is not a floating-point tensor or ``factor`` is not an int.
        ValueError: If ``images`` is not 4-D or empty, its batch size is not a multiple of $f^2$, its height or
            width is not divisible by $f$, or ``factor`` < 1.

    Shape:
        - images: $(f^2 N, C, H, W)$
        - output: $(N, C, H, W)$

    Examples:
        >>> import torch
        >>> x = torch.rand(8, 3, 32, 32)
        >>> encode_formation(x, 2).shape
        torch.Size([2, 3, 32, 32])
    """
    check_tensor("images", images, ndim=4, floating=True, nonempty=True)
    factor = check_positive_int("factor", factor)
    if factor == 1:
        return images
    tiles = factor * factor
    total, channels, height, width = images.shape
    if total % tiles != 0:
        raise ValueError(
            f"`images` batch size must be a multiple of factor**2 = {tiles}, got {total} (shape {tuple(images.shape)})"
        )
    tile_h, tile_w = _check_divisible("images", images, factor)
    count = total // tiles
    small = F.interpolate(images, size=(tile_h, tile_w), mode="bilinear", align_corners=True)
    # index (r * f + c) * N + j  ->  (r, c, j); then lay out as (j, C, r, h, c, w).
    small = small.reshape(factor, factor, count, channels, tile_h, tile_w)
    return small.permute(2, 3, 0, 4, 1, 5).reshape(count, channels, height, width)


def decode_formation(images: Tensor, factor: int, size: tuple[int, int] | None = None) -> Tensor:
    r"""Unpack $N$ stored images into $f^2 N$ images, one per grid tile, resized to ``size``.

    Tile $(r, c)$ of stored image $j$ is resized bilinearly (``align_corners=True``) to ``size`` and written to
    output index $(r f + c) N + j$:

    $$Y_{(rf + c)N + j} = \mathrm{resize}_{\text{size}}\big(S_j[:, rh:(r+1)h,\ cw:(c+1)w]\big).$$

    This is the inverse layout of [`encode_formation`][hmdc_modules.condensation.formation.encode_formation] (the
    reference implementation emits the tiles column-major instead; all tiles of a stored image share its label, so the
    order does not matter for training). For $f = 1$ the input is returned unchanged (the same tensor object)
    when ``size`` is ``None`` or equals $(H, W)$, and is only resized otherwise.

    Args:
        images: The stored (packed) images, floating point.
        factor: The formation factor $f \ge 1$.
        size: Output $(height, width)$ of each decoded image; ``None`` means the stored size $(H, W)$.

    Returns:
        The decoded images, same dtype and device as ``images``.

    Raises:
        TypeError: If ``images`` is not a floating-point tensor, ``factor`` is not an int or ``size`` is not a
            pair of ints.
        ValueError: If ``images`` is not 4-D or empty, its height or width is not divisible by $f$,
            ``factor`` < 1 or an entry of ``size`` is < 1.

    Shape:
        - images: $(N, C, H, W)$
        - output: $(f^2 N, C, h', w')$ where $(h', w')$ = ``size`` (default $(H, W)$).

    Examples:
        >>> import torch
        >>> s = torch.rand(2, 3, 32, 32, requires_grad=True)
        >>> decode_formation(s, 2).shape
        torch.Size([8, 3, 32, 32])
    """
    check_tensor("images", images, ndim=4, floating=True, nonempty=True)
    factor = check_positive_int("factor", factor)
    count, channels, height, width = images.shape
    out_size = (height, width) if size is None else _check_size(size)
    if factor == 1:
        if out_size == (height, width):
            return images
        return F.interpolate(images, size=out_size, mode="bilinear", align_corners=True)
    tile_h, tile_w = _check_divisible("images", images, factor)
    # (N, C, r, h, c, w) -> (r, c, N, C, h, w): output index (r * f + c) * N + j.
    tiles = images.reshape(count, channels, factor, tile_h, factor, tile_w).permute(2, 4, 0, 1, 3, 5)
    tiles = tiles.reshape(factor * factor * count, channels, tile_h, tile_w)
    return F.interpolate(tiles, size=out_size, mode="bilinear", align_corners=True)


def decode_formation_labels(labels: Tensor, factor: int) -> Tensor:
    r"""Labels of the images produced by [`decode_formation`][hmdc_modules.condensation.formation.decode_formation].

    Every tile inherits the label of its stored image, so output $(r f + c) N + j$ gets label $j$: the labels
    are repeated $f^2$ times along the batch axis (``labels.repeat``).

    Args:
        labels: Hard labels (any dtype) or soft labels of the $N$ stored images.
        factor: The formation factor $f \ge 1$.

    Returns:
        The labels of the decoded images, same dtype and device as ``labels``. For $f = 1$, ``labels`` itself.

    Raises:
        TypeError: If ``labels`` is not a tensor or ``factor`` is not an int.
        ValueError: If ``labels`` is not 1-D or 2-D or ``factor`` < 1.

    Shape:
        - labels: $(N)$ or $(N, K)$
        - output: $(f^2 N)$ or $(f^2 N, K)$

    Examples:
        >>> import torch
        >>> decode_formation_labels(torch.tensor([3, 7]), 2)
        tensor([3, 7, 3, 7, 3, 7, 3, 7])
    """
    check_tensor("labels", labels, ndim=(1, 2))
    factor = check_positive_int("factor", factor)
    if factor == 1:
        return labels
    return labels.repeat(factor * factor, *([1] * (labels.ndim - 1)))

"""Turning a layer's raw output (NCHW map, NHWC map or NLC tokens) into a semantic vector and a spatial map.

This is the Spatial-Semantic Decomposition's first step, done per layer: a CNN map's semantic part is its mean
over positions, a ViT's is its CLS token (or the mean of its prefix tokens, or of its patch tokens), and the
spatial part is always returned channels first, $[B, C, H, W]$.
"""

from __future__ import annotations

import math

from torch import Tensor

from hmdc_modules._validation import check_choice, check_positive_int, check_tensor, describe
from hmdc_modules.features import FeatureMap

__all__ = ["LAYOUTS", "SEMANTICS", "semantic_vector", "to_feature_map"]

LAYOUTS: tuple[str, ...] = ("nchw", "nhwc", "nlc")
"""Memory layouts [`to_feature_map`][hmdc_modules.adapters.layout.to_feature_map] understands."""

SEMANTICS: tuple[str, ...] = ("auto", "cls", "prefix_mean", "mean")
"""Ways to form the semantic vector: ``"auto"`` (CLS when there are prefix tokens, else the mean), ``"cls"``
(token 0), ``"prefix_mean"`` (mean of the prefix tokens) and ``"mean"`` (mean over the spatial positions)."""


def _size_pair(name: str, value: object) -> tuple[int, int]:
    """Normalise an int (square) or a ``(height, width)`` pair of positive ints."""
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"`{name}` must be an int or a (height, width) pair, got {len(value)} values {value!r}")
        return check_positive_int(f"{name}[0]", value[0]), check_positive_int(f"{name}[1]", value[1])
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int or a (height, width) pair of ints, got {describe(value)}")
    side = check_positive_int(name, value)
    return side, side


def semantic_vector(spatial: Tensor, prefix: Tensor | None, semantic: str, *, name: str = "feature") -> Tensor:
    r"""Form the semantic vector of one layer from its spatial map and optional prefix tokens.

    Args:
        spatial: The layer's map, channels first.
        prefix: The layer's prefix tokens (CLS first, then e.g. register tokens), or ``None`` when it has none.
        semantic: One of [`SEMANTICS`][hmdc_modules.adapters.layout.SEMANTICS]. ``"cls"`` is ``prefix[:, 0]``,
            ``"prefix_mean"`` is $\frac{1}{P}\sum_p \mathrm{prefix}_{:, p}$, ``"mean"`` is
            $\frac{1}{HW}\sum_{h,w} \mathrm{spatial}_{:, :, h, w}$ and ``"auto"`` is ``"cls"`` when $P > 0$,
            else ``"mean"``.
        name: The layer's name, for error messages.

    Returns:
        The semantic vector.

    Raises:
        ValueError: If ``semantic`` is unknown, or asks for prefix tokens the layer does not have.

    Shape:
        - spatial: $(B, C, H, W)$.
        - prefix: $(B, P, C)$.
        - Output: $(B, C)$.

    Examples:
        >>> import torch
        >>> semantic_vector(torch.ones(2, 4, 3, 3), None, "auto").shape
        torch.Size([2, 4])
    """
    check_choice("semantic", semantic, SEMANTICS)
    if semantic == "auto":
        semantic = "mean" if prefix is None or prefix.shape[1] == 0 else "cls"
    if semantic == "mean":
        return spatial.mean(dim=(2, 3))
    if prefix is None or prefix.shape[1] == 0:
        raise ValueError(
            f"`semantic`={semantic!r} needs prefix tokens (CLS, registers) but layer {name!r} has none; "
            "use semantic='mean' or 'auto'"
        )
    return prefix[:, 0] if semantic == "cls" else prefix.mean(dim=1)


def to_feature_map(
    t: Tensor,
    layout: str,
    *,
    num_prefix_tokens: int = 0,
    grid_size: int | tuple[int, int] | None = None,
    semantic: str = "auto",
    name: str = "feature",
) -> FeatureMap:
    r"""Decompose one layer's output into a semantic vector and a channels-first spatial map.

    - ``"nchw"``: the spatial map is ``t``; the semantic vector is the mean over $H, W$.
    - ``"nhwc"``: ``t`` is permuted to NCHW first, then as ``"nchw"``.
    - ``"nlc"``: ``t`` holds $P$ prefix tokens (CLS, distillation or register tokens) followed by $N$ patch
      tokens. The patch tokens are reshaped row-major to $[B, D, g_h, g_w]$ (``grid_size``, or
      $g_h = g_w = \sqrt{N}$ when $N$ is a perfect square); the prefix tokens never enter the spatial map.

    Args:
        t: The layer's output.
        layout: One of ``"nchw"``, ``"nhwc"``, ``"nlc"``.
        num_prefix_tokens: $P$, the number of leading non-patch tokens (``"nlc"`` only).
        grid_size: Patch grid $(g_h, g_w)$ for ``"nlc"`` (an int means square); needed when $N$ is not a perfect
            square.
        semantic: How to form the semantic vector, see
            [`semantic_vector`][hmdc_modules.adapters.layout.semantic_vector]. Maps (``"nchw"``/``"nhwc"``) have
            no prefix tokens, so only ``"auto"`` and ``"mean"`` apply to them.
        name: The layer's name, used in error messages.

    Returns:
        The layer's [`FeatureMap`][hmdc_modules.features.FeatureMap].

    Raises:
        TypeError: If ``t`` is not a tensor or an argument has the wrong type.
        ValueError: If ``t`` has no spatial dimensions (2-D), the wrong rank for ``layout``, fewer tokens than
            ``num_prefix_tokens + 1``, a patch count that ``grid_size`` does not tile (or that is not a perfect
            square when ``grid_size`` is ``None``), or if ``semantic`` asks for absent prefix tokens.

    Shape:
        - t: $(B, C, H, W)$ (``"nchw"``), $(B, H, W, C)$ (``"nhwc"``) or $(B, P + N, D)$ (``"nlc"``).
        - Output: semantic $(B, C)$ and spatial $(B, C, H, W)$ (for ``"nlc"``: $(B, D)$ and
          $(B, D, g_h, g_w)$).

    Examples:
        >>> import torch
        >>> tokens = torch.randn(2, 1 + 16, 8)  # CLS + a 4x4 grid of 8-dim patch tokens
        >>> fm = to_feature_map(tokens, "nlc", num_prefix_tokens=1)
        >>> fm.semantic.shape, fm.spatial.shape
        (torch.Size([2, 8]), torch.Size([2, 8, 4, 4]))
        >>> torch.equal(fm.semantic, tokens[:, 0])
        True
    """
    check_tensor(f"output of layer {name!r}", t)
    check_choice("layout", layout, LAYOUTS)
    check_choice("semantic", semantic, SEMANTICS)
    prefix_count = check_positive_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
    grid = None if grid_size is None else _size_pair("grid_size", grid_size)
    if t.ndim == 2:
        raise ValueError(
            f"layer {name!r} has no spatial dimensions: its output has shape {tuple(t.shape)} ([B, C]); tap a layer "
            "that outputs a map [B, C, H, W] / [B, H, W, C] or tokens [B, N, D]"
        )
    expected_ndim = 3 if layout == "nlc" else 4
    if t.ndim != expected_ndim:
        raise ValueError(
            f"layer {name!r} with layout {layout!r} must output a {expected_ndim}-D tensor, got shape {tuple(t.shape)}"
        )
    if layout == "nchw":
        return FeatureMap(semantic_vector(t, None, semantic, name=name), t)
    if layout == "nhwc":
        spatial = t.permute(0, 3, 1, 2)
        return FeatureMap(semantic_vector(spatial, None, semantic, name=name), spatial)

    batch, length, dim = t.shape
    patches = length - prefix_count
    if patches < 1:
        raise ValueError(
            f"layer {name!r} has {length} tokens, which leaves no patch tokens after `num_prefix_tokens`="
            f"{prefix_count} (shape {tuple(t.shape)})"
        )
    if grid is None:
        side = math.isqrt(patches)
        if side * side != patches:
            raise ValueError(
                f"layer {name!r} has N={patches} patch tokens (shape {tuple(t.shape)}, {prefix_count} prefix tokens), "
                "which is not a perfect square; pass `grid_size`=(rows, columns) with rows * columns == N"
            )
        grid = (side, side)
    elif grid[0] * grid[1] != patches:
        raise ValueError(
            f"`grid_size`={grid} holds {grid[0] * grid[1]} positions but layer {name!r} has N={patches} patch tokens "
            f"(shape {tuple(t.shape)}, {prefix_count} prefix tokens)"
        )
    spatial = t[:, prefix_count:].transpose(1, 2).reshape(batch, dim, grid[0], grid[1])
    prefix = t[:, :prefix_count]
    return FeatureMap(semantic_vector(spatial, prefix, semantic, name=name), spatial)

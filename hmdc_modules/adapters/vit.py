"""Adapter for vision transformers: token outputs of named blocks, split into prefix and patch tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from hmdc_modules._validation import check_positive_int
from hmdc_modules.adapters.base import _check_module
from hmdc_modules.adapters.hooks import HookAdapter

__all__ = ["ViTAdapter"]


class ViTAdapter(HookAdapter):
    r"""Adapter for ViTs: taps the NLC token outputs of named blocks.

    A tapped output $T \in \mathbb{R}^{B \times (P + N) \times D}$ holds $P$ prefix tokens (CLS, then any
    distillation or register tokens) followed by $N = g_h g_w$ patch tokens. The spatial map is the patch tokens
    reshaped row-major to $[B, D, g_h, g_w]$ (prefix tokens excluded); the semantic vector is the CLS token
    $T_{:, 0}$ by default (see ``semantic``). Built on [`HookAdapter`][hmdc_modules.adapters.hooks.HookAdapter].

    Args:
        model: The vision transformer.
        layers: Names of the blocks to tap (e.g. ``[f"blocks.{i}" for i in range(12)]`` for timm), shallow to deep.
        num_prefix_tokens: $P$; ``None`` reads ``model.num_prefix_tokens`` (timm) and falls back to 1 (a CLS
            token only, as in torchvision).
        grid_size: Patch grid $(g_h, g_w)$; ``None`` infers a square grid (non-square grids need it).
        semantic: ``"auto"`` (CLS if $P > 0$, else the patch mean), ``"cls"``, ``"prefix_mean"`` (mean of the
            $P$ prefix tokens) or ``"mean"`` (mean of the patch tokens).
        input_size: Resize inputs to this size first (bilinear, ``align_corners=True``); ``None`` keeps them.
        output_fn: Maps the model's output to its logits (default: the output itself if a tensor).

    Raises:
        TypeError: If ``model`` is not a module or ``num_prefix_tokens`` is not an int (and as in
            ``HookAdapter``).
        ValueError: As in ``HookAdapter``; at run time, if a grid cannot be inferred (see
            [`to_feature_map`][hmdc_modules.adapters.layout.to_feature_map]).

    Shape:
        - Input: $(B, C, H, W)$.
        - Output: logits $(B, K)$; feature $l$: semantic $(B, D)$, spatial $(B, D, g_h, g_w)$.

    Examples:
        >>> import timm, torch
        >>> vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=4)
        >>> adapter = ViTAdapter(vit, [f"blocks.{i}" for i in range(len(vit.blocks))])
        >>> adapter(torch.zeros(2, 3, 32, 32)).features[0].spatial.shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        num_prefix_tokens: int | None = None,
        grid_size: int | tuple[int, int] | None = None,
        semantic: str = "auto",
        input_size: int | tuple[int, int] | None = None,
        output_fn: Callable[[Any], Tensor] | None = None,
    ) -> None:
        _check_module("model", model)
        if num_prefix_tokens is None:
            num_prefix_tokens = getattr(model, "num_prefix_tokens", 1)
            name = "model.num_prefix_tokens"
        else:
            name = "num_prefix_tokens"
        super().__init__(
            model,
            layers,
            layout="nlc",
            num_prefix_tokens=check_positive_int(name, num_prefix_tokens, minimum=0),
            grid_size=grid_size,
            semantic=semantic,
            input_size=input_size,
            output_fn=output_fn,
        )

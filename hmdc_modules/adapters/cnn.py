"""Adapter for convolutional networks: feature maps of named layers, semantic part = global mean."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from hmdc_modules._validation import describe
from hmdc_modules.adapters.base import _check_module
from hmdc_modules.adapters.hooks import HookAdapter

__all__ = ["CNNAdapter"]


class CNNAdapter(HookAdapter):
    r"""Adapter for CNNs: taps feature maps by name; semantic vector = mean over positions.

    For a tapped map $F \in \mathbb{R}^{B \times C \times H \times W}$ the semantic vector is
    $\frac{1}{HW}\sum_{h,w} F_{:, :, h, w}$ and the spatial map is $F$ itself (permuted from NHWC when
    ``channels_last``). Built on [`HookAdapter`][hmdc_modules.adapters.hooks.HookAdapter]: one forward pass,
    hooks present only while the adapter runs.

    Args:
        model: The CNN.
        layers: Names of the submodules to tap, shallow to deep. ``None`` uses ``model.feature_layers`` (the
            pool outputs of [`ConvNet`][hmdc_modules.condensation.models.convnet.ConvNet]).
        channels_last: The tapped outputs are NHWC (e.g. ConvNeXt blocks written channels-last).
        input_size: Resize inputs to this size first (bilinear, ``align_corners=True``); ``None`` keeps them.
        output_fn: Maps the model's output to its logits (default: the output itself if a tensor).

    Raises:
        TypeError: If ``model`` is not a module or ``channels_last`` is not a bool (and as in ``HookAdapter``).
        ValueError: If ``layers`` is ``None`` and the model has no ``feature_layers`` (and as in ``HookAdapter``).

    Shape:
        - Input: $(B, C, H, W)$.
        - Output: logits $(B, K)$; feature $l$: semantic $(B, C_l)$, spatial $(B, C_l, H_l, W_l)$.

    Examples:
        >>> import torch
        >>> from hmdc_modules.condensation.models.convnet import ConvNet
        >>> adapter = CNNAdapter(ConvNet(width=16))
        >>> [tuple(f.spatial.shape) for f in adapter(torch.zeros(2, 3, 32, 32)).features]
        [(2, 16, 16, 16), (2, 16, 8, 8), (2, 16, 4, 4)]
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | None = None,
        *,
        channels_last: bool = False,
        input_size: int | tuple[int, int] | None = None,
        output_fn: Callable[[Any], Tensor] | None = None,
    ) -> None:
        _check_module("model", model)
        if not isinstance(channels_last, bool):
            raise TypeError(f"`channels_last` must be a bool, got {describe(channels_last)}")
        if layers is None:
            layers = getattr(model, "feature_layers", None)
            if layers is None:
                raise ValueError(
                    f"`layers` is required: {type(model).__name__} has no `feature_layers`; pass the names of the "
                    "submodules to tap, e.g. layers=['layer1', 'layer2', 'layer3', 'layer4']"
                )
        super().__init__(
            model,
            layers,
            layout="nhwc" if channels_last else "nchw",
            semantic="mean",
            input_size=input_size,
            output_fn=output_fn,
        )

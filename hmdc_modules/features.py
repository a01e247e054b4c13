"""Containers that adapters hand to the rest of the library.

An adapter runs a model once and returns an [`AdapterOutput`][hmdc_modules.features.AdapterOutput]: the logits
plus one [`FeatureMap`][hmdc_modules.features.FeatureMap] per tapped layer, already split into a semantic vector
and a spatial map in the common ``NCHW`` layout, whatever the model family emitted (NCHW or NHWC maps, NLC tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import Tensor

from hmdc_modules._validation import describe

__all__ = ["AdapterOutput", "FeatureMap", "FeatureSpec", "logits_of"]


class FeatureMap(NamedTuple):
    """One tapped layer, decomposed into its semantic and spatial parts.

    Attributes:
        semantic: The layer's global description of each image (CNN: mean over positions; ViT: the CLS token).
        spatial: The layer's per-position features as a map, channels first.

    Shape:
        - semantic: $(B, C)$
        - spatial: $(B, C, H, W)$
    """

    semantic: Tensor
    spatial: Tensor


class FeatureSpec(NamedTuple):
    """Static description of one tapped layer, as inferred from a probe forward pass.

    Attributes:
        name: The tapped module's name (or the index label the adapter gives it).
        channels: Channel count $C$ of both the semantic vector and the spatial map.
        height: Height $H$ of the spatial map for the probed image size.
        width: Width $W$ of the spatial map for the probed image size.
    """

    name: str
    channels: int
    height: int
    width: int


class AdapterOutput(NamedTuple):
    """What every adapter returns from a single forward pass.

    Attributes:
        logits: Class scores of the wrapped model.
        features: One [`FeatureMap`][hmdc_modules.features.FeatureMap] per tapped layer, shallow to deep.

    Shape:
        - logits: $(B, K)$ for $K$ classes.
        - features: a tuple of $L$ feature maps, each as in ``FeatureMap``.
    """

    logits: Tensor
    features: tuple[FeatureMap, ...]


def logits_of(
    output: Any, *, name: str = "`output` (the model's output)", hint: str = "pass `output_fn` to extract them"
) -> Tensor:
    """Extract the logits from whatever a model returned: the library's one logits helper.

    A tensor is returned as is; otherwise the ``logits`` attribute (an
    [`AdapterOutput`][hmdc_modules.features.AdapterOutput], Hugging Face style outputs) or ``"logits"`` key, or
    else the first element of a tuple/list (e.g. torchvision's ``GoogLeNetOutputs`` in training mode).

    Args:
        output: Whatever the model's ``forward`` returned.
        name: How error messages call ``output`` (e.g. ``"the output of models[1] on real_x"``).
        hint: What the error message advises when no logits are found.

    Returns:
        The logits tensor.

    Raises:
        TypeError: If no tensor can be found in ``output`` this way.

    Examples:
        >>> import torch
        >>> logits_of((torch.zeros(2, 10), torch.ones(2, 10))).sum().item()
        0.0
        >>> logits_of({"logits": torch.ones(1, 3)}).shape
        torch.Size([1, 3])
        >>> logits_of({"scores": torch.ones(1, 3)})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: cannot find the logits in `output` (the model's output) (dict): expected a Tensor, ...
    """
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(
        f"cannot find the logits in {name} ({describe(output)}): expected a Tensor, an object with a `logits` "
        f"tensor or a tuple whose first element is a Tensor; {hint}"
    )

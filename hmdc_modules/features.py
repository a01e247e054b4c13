"""Containers that adapters hand to the rest of the library.

An adapter runs a model once and returns an [`AdapterOutput`][hmdc_modules.features.AdapterOutput]: the logits
plus one [`FeatureMap`][hmdc_modules.features.FeatureMap] per tapped layer, already split into a semantic vector
and a spatial map in the common ``NCHW`` layout, whatever the model family emitted (NCHW or NHWC maps, NLC tokens).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["AdapterOutput", "FeatureMap", "FeatureSpec"]


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

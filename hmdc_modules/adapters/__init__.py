"""Adapters: run any model once and get its logits plus its tapped features, split into semantic and spatial parts.

Every adapter is a [`FeatureAdapter`][hmdc_modules.adapters.base.FeatureAdapter]; pick one by family or let
[`auto_adapter`][hmdc_modules.adapters.auto_adapter] choose.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hmdc_modules._validation import describe
from hmdc_modules.adapters.base import FeatureAdapter
from hmdc_modules.adapters.cnn import CNNAdapter
from hmdc_modules.adapters.hooks import HookAdapter, default_output_fn
from hmdc_modules.adapters.layout import semantic_vector, to_feature_map
from hmdc_modules.adapters.timm import TimmAdapter
from hmdc_modules.adapters.torchvision import TorchvisionAdapter
from hmdc_modules.adapters.vit import ViTAdapter
from hmdc_modules.condensation.models.convnet import ConvNet

__all__ = [
    "CNNAdapter",
    "FeatureAdapter",
    "HookAdapter",
    "TimmAdapter",
    "TorchvisionAdapter",
    "ViTAdapter",
    "auto_adapter",
    "default_output_fn",
    "semantic_vector",
    "to_feature_map",
]


def auto_adapter(model: nn.Module, **kwargs: Any) -> FeatureAdapter:
    """Wrap ``model`` in the adapter its family calls for.

    - an adapter already: returned as is;
    - the library's [`ConvNet`][hmdc_modules.condensation.models.convnet.ConvNet]:
      [`CNNAdapter`][hmdc_modules.adapters.cnn.CNNAdapter] on its pool outputs;
    - a timm model (defined in ``timm``, with ``forward_intermediates`` and ``feature_info``):
      [`TimmAdapter`][hmdc_modules.adapters.timm.TimmAdapter];
    - a torchvision model (defined in ``torchvision.models``):
      [`TorchvisionAdapter`][hmdc_modules.adapters.torchvision.TorchvisionAdapter].

    Any other model needs an explicit [`HookAdapter`][hmdc_modules.adapters.hooks.HookAdapter] (or
    ``CNNAdapter``/``ViTAdapter``) naming the layers to tap.

    Args:
        model: The network (or an adapter).
        **kwargs: Passed to the chosen adapter's constructor (e.g. ``input_size=224``, ``indices=[3, 7, 11]``).

    Returns:
        The adapter.

    Raises:
        TypeError: If ``model`` is not a module, or belongs to no family above.
        ValueError: If ``model`` is already an adapter and ``kwargs`` are given (they could not be applied).

    Examples:
        >>> import timm
        >>> from hmdc_modules.condensation.models.convnet import ConvNet
        >>> type(auto_adapter(ConvNet())).__name__
        'CNNAdapter'
        >>> type(auto_adapter(timm.create_model("test_resnet", num_classes=10))).__name__
        'TimmAdapter'
    """
    if isinstance(model, FeatureAdapter):
        if kwargs:
            raise ValueError(
                f"`model` is already a {type(model).__name__}; keyword arguments {sorted(kwargs)} cannot be applied "
                "to it (build a new adapter from `model.model` instead)"
            )
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {describe(model)}")
    if isinstance(model, ConvNet):
        return CNNAdapter(model, **kwargs)
    path = type(model).__module__ or ""
    if path.startswith("timm.") and hasattr(model, "forward_intermediates") and hasattr(model, "feature_info"):
        return TimmAdapter(model, **kwargs)
    if path.startswith("torchvision.models"):
        return TorchvisionAdapter(model, **kwargs)
    raise TypeError(
        f"`model`: no adapter is known for {type(model).__name__} (from {path or 'an unknown module'}); wrap it "
        "yourself with HookAdapter(model, layers=[...]) naming the submodules to tap (or CNNAdapter / ViTAdapter)"
    )

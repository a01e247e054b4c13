"""Adapters: run any model once and get its logits plus its tapped features, split into semantic and spatial parts.

Every adapter is a [`FeatureAdapter`][hmdc_modules.adapters.base.FeatureAdapter]; pick one by family or let
[`auto_adapter`][hmdc_modules.adapters.auto_adapter] choose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from hmdc_modules._validation import describe
from hmdc_modules.adapters.base import FeatureAdapter
from hmdc_modules.adapters.cnn import CNNAdapter
from hmdc_modules.adapters.hooks import HookAdapter, default_output_fn
from hmdc_modules.adapters.layout import semantic_vector, to_feature_map
from hmdc_modules.adapters.timm import TimmAdapter, disable_fused_attention, fused_attention, has_timm_interface
from hmdc_modules.adapters.torchvision import TorchvisionAdapter, has_known_layout
from hmdc_modules.adapters.vit import ViTAdapter

__all__ = [
    "CNNAdapter",
    "FeatureAdapter",
    "HookAdapter",
    "TimmAdapter",
    "TorchvisionAdapter",
    "ViTAdapter",
    "auto_adapter",
    "default_output_fn",
    "disable_fused_attention",
    "fused_attention",
    "semantic_vector",
    "to_feature_map",
]


def _named_feature_layers(model: nn.Module) -> bool:
    """The named-layer protocol: a non-empty ``feature_layers`` sequence of submodule names."""
    layers = getattr(model, "feature_layers", None)
    return (
        isinstance(layers, Sequence)
        and not isinstance(layers, str)
        and len(layers) > 0
        and all(isinstance(name, str) for name in layers)
    )


def _vit_blocks(model: nn.Module) -> list[str] | None:
    """The block names of a ViT with a ``blocks`` container and a ``cls_token`` parameter, else ``None``."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(getattr(model, "cls_token", None), Tensor):
        return None
    if not isinstance(blocks, nn.ModuleList | nn.Sequential):
        return None
    return [f"blocks.{name}" for name, _ in blocks.named_children()] or None


def auto_adapter(model: nn.Module, **kwargs: Any) -> FeatureAdapter:
    """Wrap ``model`` in the adapter that fits what it exposes (no model class is looked up).

    In this order:

    - an adapter already: returned as is;
    - the named-layer protocol, a ``feature_layers`` sequence of submodule names (the library's
      [`ConvNet`][hmdc_modules.condensation.models.convnet.ConvNet] offers it):
      [`CNNAdapter`][hmdc_modules.adapters.cnn.CNNAdapter] on those layers;
    - timm's feature interface, ``forward_intermediates``, ``forward_head`` and ``feature_info``:
      [`TimmAdapter`][hmdc_modules.adapters.timm.TimmAdapter], after
      [`disable_fused_attention`][hmdc_modules.adapters.timm.disable_fused_attention] so that the model can be
      differentiated twice (gradient matching needs it);
    - a layout [`TorchvisionAdapter`][hmdc_modules.adapters.torchvision.TorchvisionAdapter] knows (ViT-like,
      Swin-like, ResNet-like, or a ``features`` Sequential);
    - a ``blocks`` container with a ``cls_token`` (a ViT outside timm's interface):
      [`ViTAdapter`][hmdc_modules.adapters.vit.ViTAdapter] on every block, fused attention switched off too.

    Any other model needs an explicit [`HookAdapter`][hmdc_modules.adapters.hooks.HookAdapter] (or
    ``CNNAdapter``/``ViTAdapter``) naming the layers to tap. An op that still has no second derivative (e.g.
    ``hardsigmoid``) is reported by the matcher at its first call, naming the op and the model.

    Args:
        model: The network (or an adapter).
        **kwargs: Passed to the chosen adapter's constructor (e.g. ``input_size=224``, ``indices=[3, 7, 11]``).

    Returns:
        The adapter.

    Raises:
        TypeError: If ``model`` is not a module, or exposes none of the structures above.
        ValueError: If ``model`` is already an adapter and ``kwargs`` are given (they could not be applied).

    Examples:
        >>> import timm
        >>> from hmdc_modules.condensation import ConvNet
        >>> type(auto_adapter(ConvNet(width=8))).__name__
        'CNNAdapter'
        >>> vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=4)
        >>> type(auto_adapter(vit)).__name__, any(getattr(m, "fused_attn", False) for m in vit.modules())
        ('TimmAdapter', False)
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
    if _named_feature_layers(model):
        return CNNAdapter(model, **kwargs)
    if has_timm_interface(model):
        disable_fused_attention(model)
        return TimmAdapter(model, **kwargs)
    if has_known_layout(model):
        return TorchvisionAdapter(model, **kwargs)
    blocks = _vit_blocks(model)
    if blocks is not None:
        disable_fused_attention(model)
        return ViTAdapter(model, blocks, **kwargs)
    raise TypeError(
        f"`model`: no adapter is known for {type(model).__name__}: it exposes no `feature_layers`, no timm feature "
        "interface (`forward_intermediates`, `feature_info`), no torchvision-like stages and no `blocks` with a "
        "`cls_token`; wrap it yourself with HookAdapter(model, layers=[...]) naming the submodules to tap (or "
        "CNNAdapter / ViTAdapter)"
    )

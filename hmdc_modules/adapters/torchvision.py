"""Adapter for torchvision classifiers, with default taps chosen per model family."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from hmdc_modules.adapters.base import _check_module, _eval_mode, _guess_in_channels, _probe_input
from hmdc_modules.adapters.hooks import HookAdapter
from hmdc_modules.adapters.layout import _size_pair

__all__ = ["TorchvisionAdapter", "has_known_layout"]

_PROBE_SIZE = (224, 224)
_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def _map_size(t: object, layout: str) -> tuple[int, int] | None:
    if not isinstance(t, Tensor) or t.ndim != 4:
        return None
    return (t.shape[1], t.shape[2]) if layout == "nhwc" else (t.shape[2], t.shape[3])


def _is_vit_like(model: nn.Module) -> bool:
    """torchvision's ``VisionTransformer`` layout: a ``class_token`` and an ``encoder.layers`` container."""
    if not isinstance(getattr(model, "class_token", None), Tensor):
        return False
    encoder = getattr(model, "encoder", None)
    return isinstance(encoder, nn.Module) and isinstance(getattr(encoder, "layers", None), nn.Module)


def _is_swin_like(model: nn.Module) -> bool:
    """torchvision's ``SwinTransformer`` layout: NHWC ``features`` stages, then a ``permute`` module to NCHW."""
    return isinstance(getattr(model, "features", None), nn.Sequential) and isinstance(
        getattr(model, "permute", None), nn.Module
    )


def _is_resnet_like(model: nn.Module) -> bool:
    """Four stages ``layer1`` ... ``layer4`` (ResNet, ResNeXt, Wide ResNet)."""
    return all(isinstance(getattr(model, name, None), nn.Module) for name in _RESNET_STAGES)


def has_known_layout(model: nn.Module) -> bool:
    """Whether [`TorchvisionAdapter`][hmdc_modules.adapters.torchvision.TorchvisionAdapter] knows default taps for
    ``model``, judged by the submodules it exposes (no model class is imported).

    Args:
        model: Any module.

    Returns:
        ``True`` for a ViT-like (``class_token`` and ``encoder.layers``), Swin-like (``features`` and
        ``permute``), ResNet-like (``layer1`` ... ``layer4``) model or one with a ``features`` Sequential.

    Examples:
        >>> import torchvision
        >>> has_known_layout(torchvision.models.resnet18(weights=None)), has_known_layout(nn.Linear(2, 2))
        (True, False)
    """
    return (
        _is_vit_like(model)
        or _is_swin_like(model)
        or _is_resnet_like(model)
        or isinstance(getattr(model, "features", None), nn.Sequential)
    )


def _stage_outputs(model: nn.Module, container: str, layout: str, size: tuple[int, int]) -> list[str]:
    """Children of the ``container`` Sequential after which the spatial resolution changes, plus the last map.

    Found by running the children one after another on a zero image (eval mode, no gradients, modes restored).
    """
    children = list(model.get_submodule(container).named_children())
    sizes: list[tuple[int, int] | None] = []
    with _eval_mode(model):
        h: object = _probe_input(model, 1, size, _guess_in_channels(model))
        for _, child in children:
            h = child(h)
            sizes.append(_map_size(h, layout))
    last_map = max((i for i, s in enumerate(sizes) if s is not None), default=-1)
    return [
        f"{container}.{name}"
        for i, (name, _) in enumerate(children)
        if sizes[i] is not None and (i == last_map or sizes[i + 1] != sizes[i])
    ]


class TorchvisionAdapter(HookAdapter):
    r"""Adapter for torchvision classifiers, with default taps per family.

    Default taps (when ``layers`` is ``None``), chosen by the submodules the model exposes (no model class is
    imported, so look-alike models outside torchvision get the same taps):

    - ViT-like (a ``class_token`` and ``encoder.layers``, torchvision's ``VisionTransformer``): every
      ``encoder.layers.encoder_layer_i``, NLC tokens with one prefix (CLS) token.
    - Swin-like (a ``features`` Sequential and a ``permute`` module, torchvision's ``SwinTransformer``): the stage
      outputs of ``features``, which are NHWC.
    - ResNet-like (``layer1`` ... ``layer4``: ResNet, ResNeXt, Wide ResNet): the four stage outputs, NCHW.
    - Models with a ``features`` Sequential (VGG, AlexNet, SqueezeNet, MobileNet, EfficientNet, ConvNeXt,
      DenseNet, ...): each child of ``features`` after which the spatial resolution changes (the last child at
      each resolution, i.e. the stage outputs) plus the last child, found by a probe at construction on a zero
      image of ``input_size`` (224x224 when ``None``), in eval mode and without gradients.

    Any other model needs ``layers``. Built on [`HookAdapter`][hmdc_modules.adapters.hooks.HookAdapter]: the
    layout (NHWC for Swin, NLC with one prefix token for the ViT, otherwise by rank) follows the family.

    Args:
        model: A torchvision classifier (e.g. ``torchvision.models.resnet18(weights=None, num_classes=10)``).
        layers: Names of the submodules to tap, shallow to deep; ``None`` uses the family's default.
        input_size: Resize inputs to this size first (bilinear, ``align_corners=True``); ``None`` keeps them.
            torchvision's ``VisionTransformer`` only accepts its ``image_size``.

    Raises:
        TypeError: If ``model`` is not a module (and as in ``HookAdapter``).
        ValueError: If ``layers`` is ``None`` and the model belongs to no known family (and as in
            ``HookAdapter``).

    Shape:
        - Input: $(B, C, H, W)$.
        - Output: logits $(B, K)$; feature $l$: semantic $(B, C_l)$, spatial $(B, C_l, H_l, W_l)$.

    Examples:
        >>> import torch, torchvision
        >>> adapter = TorchvisionAdapter(torchvision.models.resnet18(weights=None, num_classes=10))
        >>> adapter.layer_names
        ('layer1', 'layer2', 'layer3', 'layer4')
        >>> [f.spatial.shape[-1] for f in adapter(torch.zeros(2, 3, 32, 32)).features]
        [8, 4, 2, 1]
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | None = None,
        *,
        input_size: int | tuple[int, int] | None = None,
    ) -> None:
        _check_module("model", model)
        probe_size = _PROBE_SIZE if input_size is None else _size_pair("input_size", input_size)
        layout, num_prefix_tokens = "auto", 0
        defaults: list[str] | None = None
        if _is_vit_like(model):
            layout, num_prefix_tokens = "nlc", 1
            defaults = [f"encoder.layers.{name}" for name, _ in model.get_submodule("encoder.layers").named_children()]
        elif _is_swin_like(model):
            layout = "nhwc"
            if layers is None:
                defaults = _stage_outputs(model, "features", layout, probe_size)
        elif _is_resnet_like(model):
            layout, defaults = "nchw", list(_RESNET_STAGES)
        elif isinstance(getattr(model, "features", None), nn.Sequential) and layers is None:
            defaults = _stage_outputs(model, "features", "nchw", probe_size)
        if layers is None:
            if not defaults:
                raise ValueError(
                    f"`layers` is required: no default taps are known for {type(model).__name__} (neither "
                    "ResNet-like, ViT-like, Swin-like nor with a `features` Sequential); pass the names of the "
                    "submodules to tap"
                )
            layers = defaults
        super().__init__(model, layers, layout=layout, num_prefix_tokens=num_prefix_tokens, input_size=input_size)

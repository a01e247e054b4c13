"""Building the models HMDC condenses with and evaluates on, by name, without downloading anything."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["create_model", "disable_fused_attention", "load_weights"]


def disable_fused_attention(model: nn.Module) -> int:
    """Switch every timm attention block of ``model`` to the explicit (math) attention path.

    Gradient matching differentiates through a gradient (double backward). PyTorch's fused
    ``scaled_dot_product_attention`` kernels (flash and memory-efficient, on CPU and GPU) do not implement
    the derivative of their backward pass, so a ViT used for matching must run the explicit
    $\\mathrm{softmax}(QK^\\top/\\sqrt{d})V$ path. timm exposes this as the ``fused_attn`` attribute of its
    attention modules; this sets it to ``False`` wherever it exists.

    Args:
        model: Any module; submodules with a boolean ``fused_attn`` attribute are switched.

    Returns:
        The number of attention modules switched.

    Examples:
        >>> import timm
        >>> vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=4)
        >>> disable_fused_attention(vit) > 0
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    count = 0
    for module in model.modules():
        if isinstance(getattr(module, "fused_attn", None), bool):
            module.fused_attn = False
            count += 1
    return count


def load_weights(model: nn.Module, path: str | Path, *, skip_mismatched: bool = True) -> list[str]:
    """Load a local weights file into ``model``, never downloading anything.

    The file may be a PyTorch state dict (``.pt``/``.pth``/``.bin``, read with ``weights_only=True``, optionally
    nested under a ``"state_dict"`` or ``"model"`` key) or a ``.safetensors`` file. Tensors whose shape differs
    from the model's (typically the classifier head of an ImageNet checkpoint used on CIFAR-10) are skipped
    when ``skip_mismatched`` is true, and left at their fresh initialisation.

    Args:
        model: The module to load into.
        path: Path of the local weights file.
        skip_mismatched: Skip tensors whose shape does not match instead of raising.

    Returns:
        The names of the model's tensors that were not loaded (missing from the file or skipped).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If no tensor of the file matches the model, or shapes mismatch and ``skip_mismatched`` is false.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path`: no weights file at {str(path)!r} (weights are only read from local files)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"`path`: {str(path)!r} does not hold a state dict, got {type(state).__name__}")
    own = model.state_dict()
    usable: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name not in own:
            continue
        if tuple(own[name].shape) != tuple(tensor.shape):
            if not skip_mismatched:
                raise ValueError(
                    f"`path`: tensor {name!r} has shape {tuple(tensor.shape)} in the file but "
                    f"{tuple(own[name].shape)} in the model"
                )
            continue
        usable[name] = tensor
    if not usable:
        raise ValueError(f"`path`: no tensor of {str(path)!r} matches the model's parameter names and shapes")
    model.load_state_dict(usable, strict=False)
    return [name for name in own if name not in usable]


def create_model(
    name: str,
    num_classes: int = 10,
    *,
    image_size: int = 32,
    patch_size: int | None = None,
    weights: str | Path | None = None,
) -> nn.Module:
    """Create a classifier by name: ``"convnet"`` (the library's ConvNet-3) or any timm model name.

    Nothing is downloaded: timm models are created with ``pretrained=False`` and, when ``weights`` is given,
    loaded from that local file (the classifier head is re-initialised for ``num_classes``). Vision
    transformers get the explicit attention path (see
    [`disable_fused_attention`][hmdc_modules.condensation.models.factory.disable_fused_attention]) so that gradient
    matching
    can differentiate through them.

    Args:
        name: ``"convnet"`` or a timm model name (e.g. ``"vit_tiny_patch16_224"``, ``"resnet18"``).
        num_classes: Number of output classes.
        image_size: Input side. Passed to timm models that take ``img_size`` (ViTs), so a ViT runs natively at
            32x32 instead of upsampling to 224.
        patch_size: Patch size for ViTs (e.g. 4 at 32x32); ``None`` keeps the architecture's own.
        weights: Optional local weights file (see
        [`load_weights`][hmdc_modules.condensation.models.factory.load_weights]).

    Returns:
        The model, in training mode.

    Raises:
        ValueError: If ``name`` is not ``"convnet"`` and not a timm model name.

    Examples:
        >>> vit = create_model("test_vit", num_classes=10, image_size=32, patch_size=4)
        >>> vit(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a model name string, got {type(name).__name__}")
    if name.lower() == "convnet":
        from hmdc_modules.condensation.models.convnet import ConvNet

        model: nn.Module = ConvNet(num_classes=num_classes, image_size=image_size)
    else:
        import timm

        if not timm.is_model(name):
            raise ValueError(f"`name` must be 'convnet' or a timm model name, got {name!r}")
        kwargs: dict[str, object] = {"num_classes": num_classes}
        module_name = timm.models.model_entrypoint(name).__module__
        takes_img_size = module_name.endswith(("vision_transformer", "deit", "vision_transformer_relpos", "eva"))
        if takes_img_size:
            kwargs["img_size"] = image_size
            if patch_size is not None:
                kwargs["patch_size"] = patch_size
        elif patch_size is not None:
            raise ValueError(f"`patch_size` only applies to vision transformers, got {patch_size} for {name!r}")
        model = timm.create_model(name, pretrained=False, **kwargs)
    if weights is not None:
        load_weights(model, weights)
    disable_fused_attention(model)
    return model

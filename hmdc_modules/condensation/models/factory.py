"""Building the models HMDC condenses with and evaluates on, by name, randomly initialised or pretrained."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from hmdc_modules._validation import check_positive_int, describe
from hmdc_modules.adapters import disable_fused_attention

__all__ = ["VIT_MODULES", "create_model", "disable_fused_attention", "is_vision_transformer", "load_weights"]

VIT_MODULES: tuple[str, ...] = ("vision_transformer", "deit", "vision_transformer_relpos", "eva")
"""The timm modules whose models are vision transformers taking ``img_size``/``patch_size`` (the one list)."""


def is_vision_transformer(name: str) -> bool:
    """Whether the timm model ``name`` is a vision transformer (defined in one of ``VIT_MODULES``).

    ``"convnet"`` and names timm does not know are not vision transformers.

    Examples:
        >>> is_vision_transformer("vit_tiny_patch16_224"), is_vision_transformer("resnet18")
        (True, False)
    """
    import timm

    if not isinstance(name, str):
        raise TypeError(f"`name` must be a model name string, got {describe(name)}")
    if name.lower() == "convnet" or not timm.is_model(name):
        return False
    return timm.models.model_entrypoint(name).__module__.endswith(VIT_MODULES)


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


def _check_optional_int(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int or None, got {describe(value)}")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1 or None, got {value}")
    return value


def create_model(
    name: str,
    num_classes: int = 10,
    *,
    image_size: int | None = None,
    patch_size: int | None = None,
    pretrained: bool | str | None = None,
    weights: str | Path | None = None,
    double_backward: bool = True,
) -> nn.Module:
    """Create a classifier by name, ``"convnet"`` (the library's ConvNet-3) or any timm model, optionally pretrained.

    Weights come from one of:

    - ``pretrained=True`` or a timm tag: timm's own loader and cache (the Hugging Face hub). Offline, or where the
      hub cannot be reached, this raises
      [`PretrainedWeightsUnavailable`][hmdc_modules.condensation.models.pretrained.PretrainedWeightsUnavailable]
      at once (one line naming the weights and how to pass a local file), unless the weights are in the local
      cache already.
    - ``weights=FILE``: a weights file written by ``python -m hmdc_modules.pretrain`` (its recorded image size and
      patch size fill in unset ``image_size``/``patch_size``; every backbone tensor must fit), or any other local
      file, read by timm's loader through ``pretrained_cfg_overlay=dict(file=...)`` (it adapts position embeddings
      and patch sizes), or for the ConvNet by
      [`load_weights`][hmdc_modules.condensation.models.factory.load_weights].

    With either, the classifier head is re-initialised for ``num_classes``: the backbone is pretrained, the head is
    new. By default vision transformers get the explicit attention path (see
    [`disable_fused_attention`][hmdc_modules.adapters.timm.disable_fused_attention]) so that gradient
    matching can differentiate through them; ``double_backward=False`` keeps timm's fused attention kernels, for
    training with first-order gradients only (evaluation), where they are faster.

    Args:
        name: ``"convnet"`` or a timm model name (e.g. ``"vit_tiny_patch16_224"``, ``"resnet18"``).
        num_classes: Number of output classes.
        image_size: Input side. Passed to timm models that take ``img_size`` (ViTs), so a ViT runs natively at
            32x32 instead of upsampling to 224; sets the ConvNet's classifier size. ``None``: the weights file's
            recorded size, else 32 for the ConvNet and the architecture's own for timm models.
        patch_size: Patch size for ViTs (e.g. 4 at 32x32); ``None`` keeps the weights file's or the
            architecture's own.
        pretrained: ``True`` (the architecture's default timm tag), a tag (``"augreg_in21k_ft_in1k"`` or
            ``"vit_tiny_patch16_224.augreg_in21k_ft_in1k"``), or ``None``/``False`` for random weights.
        weights: A local weights file (see above). Exclusive with ``pretrained``.
        double_backward: Make the model differentiable twice (switch fused attention off). ``False`` leaves the
            architecture's attention kernels as timm builds them.

    Returns:
        The model, in training mode.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``name`` is neither ``"convnet"`` nor a timm model name, ``patch_size`` is given for a model
            that is not a ViT, both ``pretrained`` and ``weights`` are given, the tag is unknown, or the weights do
            not fit the model.
        FileNotFoundError: If ``weights`` names no file.
        PretrainedWeightsUnavailable: If hub weights were requested and cannot be obtained.

    Examples:
        >>> vit = create_model("test_vit", num_classes=10, image_size=32, patch_size=4)
        >>> vit(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    from hmdc_modules.condensation.models.pretrained import (
        _info,
        _read_library_file,
        check_pretrained_available,
        load_library_weights,
        reset_head,
        resolve_pretrained_tag,
        unavailable,
    )

    if not isinstance(name, str):
        raise TypeError(f"`name` must be a model name string, got {describe(name)}")
    check_positive_int("num_classes", num_classes)
    if not isinstance(double_backward, bool):
        raise TypeError(f"`double_backward` must be a bool, got {describe(double_backward)}")
    image_size = _check_optional_int("image_size", image_size)
    patch_size = _check_optional_int("patch_size", patch_size)
    if pretrained is False:
        pretrained = None
    if pretrained is not None and not (pretrained is True or (isinstance(pretrained, str) and pretrained)):
        raise TypeError(f"`pretrained` must be True, a timm tag string or None, got {describe(pretrained)}")
    if weights is not None and not isinstance(weights, str | os.PathLike):
        raise TypeError(f"`weights` must be a path to a local file or None, got {describe(weights)}")
    if pretrained is not None and weights is not None:
        raise ValueError(
            f"`pretrained` and `weights` are exclusive: got pretrained={pretrained!r} and weights={str(weights)!r}"
        )
    path = None if weights is None else Path(weights).expanduser()
    content = None
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"`weights`: no weights file at {str(path)!r} (weights are read from local files)")
        content = _read_library_file(path)
    if content is not None:
        info = _info(path, content)  # type: ignore[arg-type]
        if info.model.lower() != name.lower():
            raise ValueError(f"`weights`: {str(path)!r} holds weights of {info.model!r}, not of {name!r}")
        image_size = info.image_size if image_size is None else image_size
        patch_size = info.patch_size if patch_size is None else patch_size

    if name.lower() == "convnet":
        from hmdc_modules.condensation.models.convnet import ConvNet

        if pretrained is not None:
            raise ValueError(
                f"`pretrained`: the ConvNet has no hub weights, got {pretrained!r}; pass weights=FILE instead"
            )
        if patch_size is not None and content is None:
            raise ValueError(f"`patch_size` only applies to vision transformers, got {patch_size} for 'convnet'")
        model: nn.Module = ConvNet(num_classes=num_classes, image_size=32 if image_size is None else image_size)
        if content is not None:
            load_library_weights(model, path, content)  # type: ignore[arg-type]
        elif path is not None:
            load_weights(model, path)
            reset_head(model)
        return model  # no attention: nothing to switch

    import timm

    if not timm.is_model(name):
        raise ValueError(f"`name` must be 'convnet' or a timm model name, got {name!r}")
    kwargs: dict[str, object] = {"num_classes": num_classes}
    if is_vision_transformer(name):
        if image_size is not None:
            kwargs["img_size"] = image_size
        if patch_size is not None:
            kwargs["patch_size"] = patch_size
        default_cfg = timm.models.get_pretrained_cfg(name)
        side = image_size if image_size is not None else (default_cfg.input_size[-1] if default_cfg else None)
        patch = patch_size if patch_size is not None else _default_patch(name)
        if side is not None and patch is not None and side % patch:
            raise ValueError(f"`image_size` {side} must be divisible by the patch size {patch} of {name!r}")
    elif patch_size is not None:
        raise ValueError(f"`patch_size` only applies to vision transformers, got {patch_size} for {name!r}")

    if pretrained is not None:
        tag = resolve_pretrained_tag(name, pretrained)
        cached = check_pretrained_available(tag, True)
        if cached is not None:
            model = _timm_from_file(tag, cached, kwargs, what=f"cached weights {tag!r}")
        else:
            try:
                model = timm.create_model(tag, pretrained=True, **kwargs)
            except OSError as error:  # connection, HTTP and hub errors all derive from OSError
                raise unavailable(tag, f"the download failed ({type(error).__name__}: {error})") from error
        reset_head(model)
    elif content is not None:
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_library_weights(model, path, content)  # type: ignore[arg-type]
    elif path is not None:
        model = _timm_from_file(name, str(path), kwargs, what=f"weights file {str(path)!r}")
        reset_head(model)
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
    if double_backward:
        disable_fused_attention(model)
    return model


def _default_patch(name: str) -> int | None:
    """The patch size a timm ViT is built with, read from its name (``..._patch16_...``) where it says."""
    import re

    found = re.search(r"patch(\d+)", name)
    return int(found.group(1)) if found else None


def _timm_from_file(name: str, file: str, kwargs: dict[str, object], *, what: str) -> nn.Module:
    """timm's own pretrained loader, pointed at a local file (it adapts position embeddings, patches and the head)."""
    import timm

    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": file}, **kwargs)
    except (RuntimeError, KeyError, ValueError) as error:
        message = " ".join(str(error).split())
        raise ValueError(f"`weights`: timm could not load the {what} into {name!r}: {message[:300]}") from error

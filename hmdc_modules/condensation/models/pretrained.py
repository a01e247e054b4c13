"""Pretrained weights: timm's hub tags, local files, and the library's own weights files.

Three sources reach a model built by [`create_model`][hmdc_modules.condensation.models.factory.create_model]:

- **A timm tag** (``pretrained=True`` for the architecture's default tag, or a tag such as
  ``"augreg_in21k_ft_in1k"`` / ``"vit_tiny_patch16_224.augreg_in21k_ft_in1k"``): timm's own loader and cache
  (Hugging Face hub), so weights downloaded once are reused. Where the hub cannot be reached the request fails at
  once with [`PretrainedWeightsUnavailable`][hmdc_modules.condensation.models.pretrained.PretrainedWeightsUnavailable],
  one line naming the weights and how to pass a local file instead; weights already in the local cache still load.
- **A local file in timm's format** (e.g. a ``model.safetensors`` downloaded from the hub on a connected machine):
  the same timm loader, through ``pretrained_cfg_overlay=dict(file=...)``, which also adapts position embeddings
  and patch sizes.
- **A weights file written by ``python -m hmdc_modules.pretrain``**
  ([`save_weights_file`][hmdc_modules.condensation.models.pretrained.save_weights_file]): a dictionary holding the
  state dict and the architecture it belongs to (model name, image size, patch size, normalisation), read with
  ``torch.load(..., weights_only=True)``. Its architecture fills in what the caller leaves unset.

In every case the classifier head is re-initialised for ``num_classes`` (the backbone is pretrained, the head is
new), which is what HMDC's ``_ft`` models and the evaluation's fine-tuned entries need;
[`reset_head`][hmdc_modules.condensation.models.pretrained.reset_head] does it again in place.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from hmdc_modules._validation import describe

__all__ = [
    "WEIGHTS_FORMAT",
    "PretrainedWeightsUnavailable",
    "WeightsInfo",
    "check_pretrained_available",
    "head_parameter_names",
    "hub_unreachable_reason",
    "read_weights_info",
    "reset_head",
    "resolve_pretrained_tag",
    "save_weights_file",
]

WEIGHTS_FORMAT = "hmdc_modules.weights"
"""The ``"format"`` value of a weights file written by the library."""

_WEIGHTS_FORMAT_VERSION = 1
_TRUE = frozenset({"1", "on", "yes", "true"})
_PROBE_TIMEOUT_S = 2.0


class PretrainedWeightsUnavailable(RuntimeError):
    """Hub weights were requested but cannot be obtained here (offline, unreachable hub, failed download).

    The message is one line: the weights asked for, why they are unavailable, and how to pass a local file instead.
    Catch it to stop a run before it writes anything.

    Examples:
        >>> issubclass(PretrainedWeightsUnavailable, RuntimeError)
        True
    """


@dataclass(frozen=True)
class WeightsInfo:
    """What a library weights file says about the model it belongs to.

    Attributes:
        model: The ``create_model`` name (``"convnet"`` or a timm name).
        num_classes: Classes of the head the weights were trained with.
        image_size: Input side the model was trained at (images are resized to it).
        patch_size: ViT patch size, ``None`` for other models.
        mean: Per-channel mean the inputs were normalised with.
        std: Per-channel standard deviation the inputs were normalised with.
        classes: Class names of the training data, in label order (may be empty).
        extra: Everything else recorded at training time (data, subset, seed, epochs, accuracies).
    """

    model: str
    num_classes: int
    image_size: int
    patch_size: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the classifier head's parameters (``classifier.*`` of the ConvNet, timm's ``get_classifier()``).

    Args:
        model: The library's ConvNet or a timm classifier.

    Returns:
        Parameter names as ``model.named_parameters()`` lists them.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
        ValueError: If the model has no recognisable classifier.

    Examples:
        >>> from hmdc_modules.condensation.models.convnet import ConvNet
        >>> head_parameter_names(ConvNet(width=4))
        ['classifier.weight', 'classifier.bias']
    """
    head = _head_module(model)
    ids = {id(p) for p in head.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def _head_module(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {describe(model)}")
    head = model.get_classifier() if callable(getattr(model, "get_classifier", None)) else None
    if head is None:
        head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Module) or not any(True for _ in head.parameters()):
        raise ValueError(
            f"`model`: no classifier head found on {type(model).__name__} (expected a timm model's get_classifier() "
            "or a `classifier` module with parameters)"
        )
    return head


def reset_head(model: nn.Module) -> list[str]:
    """Re-initialise the classifier head in place (PyTorch's default init), leaving the backbone untouched.

    The parameter objects are kept, so optimisers holding them stay valid: call it after re-loading a pretrained
    backbone to get the "pretrained backbone, new head" model of every ``_ft`` outer iteration.

    Args:
        model: The library's ConvNet or a timm classifier.

    Returns:
        The names of the re-initialised parameters.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
        ValueError: If the model has no recognisable classifier or a head module cannot be re-initialised.

    Examples:
        >>> from hmdc_modules.condensation.models.convnet import ConvNet
        >>> net = ConvNet(width=4)
        >>> before = net.classifier.weight.clone()
        >>> reset_head(net)
        ['classifier.weight', 'classifier.bias']
        >>> bool((net.classifier.weight != before).any())
        True
    """
    head = _head_module(model)
    for module in head.modules():
        own = list(module.parameters(recurse=False))
        if own and not callable(getattr(module, "reset_parameters", None)):
            raise ValueError(f"`model`: head module {type(module).__name__} has no reset_parameters()")
        if own:
            module.reset_parameters()
    return head_parameter_names(model)


def resolve_pretrained_tag(name: str, pretrained: bool | str) -> str:
    """The full timm ``architecture.tag`` name that ``pretrained`` asks for, checked against timm's registry.

    Args:
        name: The timm architecture (``"vit_tiny_patch16_224"``); a tag in ``name`` itself is allowed.
        pretrained: ``True`` (the architecture's default tag), a tag (``"augreg_in21k_ft_in1k"``) or a full
            ``"architecture.tag"`` whose architecture is ``name``'s.

    Returns:
        ``"architecture.tag"``.

    Raises:
        TypeError: If ``pretrained`` is neither ``True`` nor a string.
        ValueError: If timm knows no pretrained weights by that tag for that architecture.

    Examples:
        >>> resolve_pretrained_tag("vit_tiny_patch16_224", "augreg_in21k_ft_in1k")
        'vit_tiny_patch16_224.augreg_in21k_ft_in1k'
        >>> resolve_pretrained_tag("resnet18", True)
        'resnet18.a1_in1k'
    """
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    architecture, name_tag = split_model_name_tag(name)
    if pretrained is True:
        tag = name_tag
    elif isinstance(pretrained, str) and pretrained:
        if "." in pretrained:
            other, tag = split_model_name_tag(pretrained)
            if other != architecture:
                raise ValueError(
                    f"`pretrained`: {pretrained!r} names architecture {other!r}, but the model is {architecture!r}"
                )
        else:
            tag = pretrained
    else:
        raise TypeError(f"`pretrained` must be True, a timm tag string or None, got {describe(pretrained)}")
    full = f"{architecture}.{tag}" if tag else architecture
    try:
        cfg = get_pretrained_cfg(full)
    except RuntimeError:  # timm: "Invalid pretrained tag"
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{architecture}.*")]
        raise ValueError(
            f"`pretrained`: timm has no pretrained weights {full!r}; tags for {architecture!r}: "
            f"{', '.join(tags) if tags else 'none'}"
        )
    return f"{architecture}.{cfg.tag}" if cfg.tag else full


def hub_unreachable_reason(tag: str) -> str | None:
    """Why the source of timm weights ``tag`` cannot be reached right now, or ``None`` if it seems reachable.

    Cheap and quick: ``HF_HUB_OFFLINE`` set (as Hugging Face's clients honour it) answers at once; otherwise one TCP
    connection to the weights' host (``HF_ENDPOINT`` or the hub, or the download URL's host) with a 2-second
    timeout. Nothing is downloaded.

    Args:
        tag: A full ``"architecture.tag"`` timm name.

    Returns:
        A short reason, or ``None``.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(tag)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return "HF_HUB_OFFLINE is set"
    if cfg is not None and cfg.hf_hub_id:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    elif cfg is not None and cfg.url:
        endpoint = cfg.url
    else:
        return None
    parsed = urlparse(endpoint)
    host = parsed.hostname or endpoint
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
            return None
    except OSError as error:
        return f"{host} cannot be reached ({type(error).__name__})"


def _cached_hub_file(tag: str) -> str | None:
    """The locally cached hub file of ``tag``, if timm downloaded it before (no network)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(tag)
    if cfg is None:
        return None
    if not cfg.hf_hub_id:
        if not cfg.url:
            return None
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        return str(candidate) if candidate.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        return None
    repo, _, revision = cfg.hf_hub_id.partition("@")
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for filename in names:
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def unavailable(tag: str, reason: str) -> PretrainedWeightsUnavailable:
    """The one-line error for hub weights ``tag`` that cannot be obtained, for ``reason``."""
    reason = " ".join(str(reason).split())
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return PretrainedWeightsUnavailable(
        f"pretrained weights {tag!r} are unavailable: {reason}, and they are not in the local timm/Hugging Face "
        f"cache; pass a local weights file instead (create_model(..., weights=FILE), the example's --weights-b FILE): "
        f"a file written by `python -m hmdc_modules.pretrain`, or timm's model file for {tag!r} copied from a "
        "connected machine"
    )


def check_pretrained_available(name: str, pretrained: bool | str) -> str | None:
    """Check, before building anything, that timm weights can be obtained here; return their cached file if any.

    For a command line that must stop before writing anything when the weights are out of reach: resolves the tag,
    looks in the local cache, and otherwise probes the hub once (see
    [`hub_unreachable_reason`][hmdc_modules.condensation.models.pretrained.hub_unreachable_reason]). Nothing is
    downloaded.

    Args:
        name: The timm architecture.
        pretrained: ``True`` or a tag, as for [`create_model`][hmdc_modules.condensation.models.factory.create_model].

    Returns:
        The path of the cached weights file, or ``None`` when they are not cached but the hub seems reachable.

    Raises:
        PretrainedWeightsUnavailable: If they are not cached and the hub cannot be reached (one line).
        ValueError: If timm knows no such weights.
        TypeError: If ``pretrained`` is neither ``True`` nor a string.
    """
    tag = resolve_pretrained_tag(name, pretrained)
    cached = _cached_hub_file(tag)
    if cached is not None:
        return cached
    reason = hub_unreachable_reason(tag)
    if reason is not None:
        raise unavailable(tag, reason)
    return None


def save_weights_file(
    path: str | Path,
    model: nn.Module,
    *,
    name: str,
    num_classes: int,
    image_size: int,
    patch_size: int | None,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    classes: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights with their architecture, atomically, as a library weights file.

    The file is a dictionary readable with ``torch.load(..., weights_only=True)``; its ``"state_dict"`` key also lets
    timm's loader and [`load_weights`][hmdc_modules.condensation.models.factory.load_weights] read it.

    Args:
        path: Destination file (``.pt``); written through a temporary file and a rename.
        model: The trained model.
        name: Its ``create_model`` name.
        num_classes: Classes of its head.
        image_size: Input side it was trained at.
        patch_size: ViT patch size or ``None``.
        mean: Per-channel input mean.
        std: Per-channel input standard deviation.
        classes: Class names in label order.
        extra: Plain values to record (training data, subset, seed, epochs, accuracies).

    Returns:
        The destination path.
    """
    from hmdc_modules.condensation import save_checkpoint

    payload = {
        "format": WEIGHTS_FORMAT,
        "format_version": _WEIGHTS_FORMAT_VERSION,
        "model": str(name),
        "num_classes": int(num_classes),
        "image_size": int(image_size),
        "patch_size": None if patch_size is None else int(patch_size),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "classes": [str(c) for c in classes],
        "extra": dict(extra or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    return save_checkpoint(payload, path)


def _read_library_file(path: Path) -> dict[str, Any] | None:
    """The content of a library weights file, or ``None`` when ``path`` holds something else."""
    if path.suffix in (".safetensors", ".npz"):
        return None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file we can read safely: let timm's loader judge it
        return None
    if isinstance(content, dict) and content.get("format") == WEIGHTS_FORMAT:
        return content
    return None


def read_weights_info(path: str | Path) -> WeightsInfo | None:
    """The architecture recorded in a library weights file, or ``None`` for any other weights file.

    Args:
        path: A local weights file.

    Returns:
        Its [`WeightsInfo`][hmdc_modules.condensation.models.pretrained.WeightsInfo], or ``None`` when the file
        is not one the library wrote (e.g. a timm ``model.safetensors``).

    Raises:
        FileNotFoundError: If there is no file at ``path``.
        ValueError: If a library weights file lacks a field or has a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`weights`: no weights file at {str(path)!r} (weights are read from local files)")
    content = _read_library_file(path)
    if content is None:
        return None
    return _info(path, content)


def _info(path: Path, content: dict[str, Any]) -> WeightsInfo:
    version = content.get("format_version")
    if not isinstance(version, int) or version > _WEIGHTS_FORMAT_VERSION:
        raise ValueError(
            f"`weights`: {str(path)!r} has format version {version!r}; this library reads up to "
            f"{_WEIGHTS_FORMAT_VERSION}"
        )
    missing = [k for k in ("model", "num_classes", "image_size", "mean", "std", "state_dict") if k not in content]
    if missing:
        raise ValueError(f"`weights`: {str(path)!r} is a library weights file without {', '.join(missing)}")
    return WeightsInfo(
        model=str(content["model"]),
        num_classes=int(content["num_classes"]),
        image_size=int(content["image_size"]),
        patch_size=None if content.get("patch_size") is None else int(content["patch_size"]),
        mean=tuple(float(v) for v in content["mean"]),
        std=tuple(float(v) for v in content["std"]),
        classes=tuple(str(c) for c in content.get("classes", ())),
        extra=dict(content.get("extra", {})),
    )


def load_library_weights(model: nn.Module, path: Path, content: dict[str, Any]) -> None:
    """Load every backbone tensor of a library weights file into ``model`` (strictly), then renew the head."""
    state: dict[str, Tensor] = content["state_dict"]
    head = set(head_parameter_names(model))
    head_buffers = {n for n in state if n.rsplit(".", 1)[0] in {h.rsplit(".", 1)[0] for h in head}}
    backbone = {k: v for k, v in state.items() if k not in head and k not in head_buffers}
    own = model.state_dict()
    expected = {k for k in own if k not in head and k not in head_buffers}
    missing = sorted(expected - backbone.keys())
    unexpected = sorted(backbone.keys() - expected)
    wrong = sorted(k for k in expected & backbone.keys() if tuple(own[k].shape) != tuple(backbone[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
            for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if names
        )
        raise ValueError(f"`weights`: {str(path)!r} does not fit the model's backbone ({detail})")
    model.load_state_dict(backbone, strict=False)
    reset_head(model)

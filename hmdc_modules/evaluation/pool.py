"""The pool of architectures the HMDC protocol evaluates on: the paper's names, learning rates and model families.

A [`ModelSpec`][hmdc_modules.evaluation.records.ModelSpec] picks one architecture and its recipe; this module knows
the protocol's defaults for it.
"""

from __future__ import annotations

from typing import Any

from hmdc_modules._validation import describe

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "PAPER_FT_POOL",
    "PAPER_LEARNING_RATES",
    "PAPER_POOL",
    "PRETRAINED_IMAGE_SIZE",
    "ModelEntry",
    "default_learning_rate",
    "model_family",
    "parse_model_entry",
]

PAPER_POOL: tuple[str, ...] = (
    "convnet",
    "resnet18",
    "resnet50",
    "resnet101",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
)
"""The seven architectures of the HMDC cross-architecture tables (ConvNet-3, ResNet18/50/101, ViT-Tiny/Small/Base)."""

PAPER_FT_POOL: tuple[str, ...] = (
    "convnet",
    "resnet18_ft",
    "resnet50_ft",
    "resnet101_ft",
    "vit_tiny_patch16_224_ft",
    "vit_small_patch16_224_ft",
    "vit_base_patch16_224_ft",
)
"""The paper's evaluation pool as the HMDC authors ran it: ConvNet-3 from scratch at 32 px, and ResNet18/50/101 and
ViT-Tiny/Small/Base ImageNet-pretrained (timm's default tags), fine-tuned at 224 px with the paper's per-model
learning rates (``--models paper-ft``; with the ``hmdc`` protocol: 2,000 epochs, tested every 10, best and final)."""

PRETRAINED_IMAGE_SIZE = 224
"""The input side of an ``_ft`` entry with hub weights (the side the ImageNet weights were trained at)."""

PAPER_LEARNING_RATES: dict[str, float] = {
    "convnet": 1e-2,
    "resnet18": 1e-3,
    "resnet50": 1e-3,
    "resnet101": 1e-4,
    "vit_tiny": 1e-3,
    "vit_small": 1e-3,
    "vit_base": 1e-4,
}
"""SGD learning rates of the HMDC evaluation protocol. ``vit_*`` keys match every timm name with that prefix
(``vit_tiny_patch16_224``, ``vit_tiny_patch16_384``, ...); the others match the name exactly."""

DEFAULT_LEARNING_RATE: float = 1e-3
"""The learning rate of a model that [`PAPER_LEARNING_RATES`][hmdc_modules.evaluation.pool.PAPER_LEARNING_RATES]
does not list."""


def _base_name(name: str) -> str:
    """The model name without a timm pretrained tag (``"resnet18.a1_in1k"`` -> ``"resnet18"``), lower case."""
    return name.split(".", 1)[0].lower()


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a model name string, got {describe(name)}")
    if not name.strip():
        raise ValueError(f"`name` must be 'convnet' or a timm model name, got {name!r}")
    return name


def default_learning_rate(name: str) -> float:
    """The SGD learning rate the HMDC evaluation protocol trains ``name`` with.

    ConvNet $10^{-2}$; ResNet18 and ResNet50 $10^{-3}$; ResNet101 $10^{-4}$; ViT-Tiny and ViT-Small $10^{-3}$;
    ViT-Base $10^{-4}$ (the HMDC evaluation protocol); any other name
    [`DEFAULT_LEARNING_RATE`][hmdc_modules.evaluation.pool.DEFAULT_LEARNING_RATE] ($10^{-3}$). A timm pretrained tag
    (``"resnet18.a1_in1k"``) is ignored for the lookup.

    Args:
        name: ``"convnet"`` or a timm model name.

    Returns:
        The learning rate.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If ``name`` is empty.

    Examples:
        >>> default_learning_rate("resnet101"), default_learning_rate("vit_base_patch16_224")
        (0.0001, 0.0001)
        >>> default_learning_rate("efficientnet_b0")
        0.001
    """
    base = _base_name(_check_name(name))
    if base in PAPER_LEARNING_RATES and not base.startswith("vit_"):
        return PAPER_LEARNING_RATES[base]
    for prefix, rate in PAPER_LEARNING_RATES.items():
        if prefix.startswith("vit_") and base.startswith(prefix + "_"):
            return rate
    return DEFAULT_LEARNING_RATE


def model_family(name: str) -> str:
    """Whether ``name`` is a vision transformer (``"vit"``) or not (``"cnn"``).

    A ViT is a timm model defined in one of the kit's ``VIT_MODULES`` (timm's ``vision_transformer``, ``deit``,
    ``vision_transformer_relpos`` and ``eva``): exactly the models
    [`create_model`][hmdc_modules.condensation.models.factory.create_model] passes ``image_size`` and
    ``patch_size`` to. Everything else, ``"convnet"`` included, counts as a CNN. The family
    decides whether cutmix is used in training (not for ViTs) and which average a model enters in the reports.

    Args:
        name: ``"convnet"`` or a timm model name.

    Returns:
        ``"vit"`` or ``"cnn"``.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If ``name`` is neither ``"convnet"`` nor a timm model name.

    Examples:
        >>> model_family("vit_tiny_patch16_224"), model_family("resnet18"), model_family("convnet")
        ('vit', 'cnn', 'cnn')
    """
    name = _check_name(name)
    if name.lower() == "convnet":
        return "cnn"
    import timm

    if not timm.is_model(name):
        raise ValueError(f"`name` must be 'convnet' or a timm model name, got {name!r}")
    from hmdc_modules.condensation import is_vision_transformer

    return "vit" if is_vision_transformer(name.split(".", 1)[0]) else "cnn"


_ENTRY_OPTIONS = ("weights", "pretrained", "label")


class ModelEntry(dict):
    """The ``ModelSpec`` arguments a pool entry names (``name``, and ``weights``/``pretrained``/``label`` when
    given); a plain dict."""


def parse_model_entry(entry: str) -> ModelEntry:
    """The model a pool entry names: a plain name, a pretrained ``_ft`` entry, or a name with options.

    - ``resnet18``: from scratch (``resnet18_scratch`` says the same, labelled so);
    - ``resnet18_ft``: timm's pretrained weights (default tag), backbone loaded, head new, labelled ``resnet18_ft``;
    - ``resnet18@pretrained=TAG``: those of a timm tag (``a1_in1k`` or ``resnet18.a1_in1k``);
    - ``resnet18@weights=FILE``: a local weights file (``python -m hmdc_modules.pretrain``'s, a timm checkpoint or a
      state dict), labelled ``resnet18_ft``;
    - ``...@label=NAME``: the name in the reports.

    Args:
        entry: The entry text.

    Returns:
        A [`ModelEntry`][hmdc_modules.evaluation.pool.ModelEntry] dict of ``ModelSpec`` arguments.

    Raises:
        TypeError: If ``entry`` is not a string.
        ValueError: If the model name is unknown, an option is unknown or repeated, or both weights and pretrained
            are given.

    Examples:
        >>> parse_model_entry("resnet18_ft")
        {'name': 'resnet18', 'pretrained': True, 'label': 'resnet18_ft'}
        >>> parse_model_entry("convnet@weights=w.pt@label=convnet_p")
        {'name': 'convnet', 'weights': 'w.pt', 'label': 'convnet_p'}
        >>> parse_model_entry("vit_tiny_patch16_224@pretrained=augreg_in21k_ft_in1k")["pretrained"]
        'vit_tiny_patch16_224.augreg_in21k_ft_in1k'
    """
    if not isinstance(entry, str):
        raise TypeError(f"`entry` must be a model entry string, got {describe(entry)}")
    name, *options = [part.strip() for part in entry.split("@")]
    result = ModelEntry()
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in _ENTRY_OPTIONS or not value:
            raise ValueError(
                f"`entry` {entry!r}: options are @weights=FILE, @pretrained=TAG, @label=NAME; got {option!r}"
            )
        if key in result:
            raise ValueError(f"`entry` {entry!r}: @{key} is given twice")
        result[key] = value
    if "weights" in result and "pretrained" in result:
        raise ValueError(f"`entry` {entry!r}: @weights and @pretrained are exclusive")
    label = None
    for suffix in ("_ft", "_scratch"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base and (base.lower() == "convnet" or _is_timm_name(base)):
            label, name = name, base
            if suffix == "_ft" and "weights" not in result:
                if name.lower() == "convnet":
                    raise ValueError(f"`entry` {entry!r}: the ConvNet has no hub weights; use convnet@weights=FILE")
                result.setdefault("pretrained", "true")
            break
    model_family(name)  # checks the name
    out = ModelEntry(name=name)
    if "weights" in result:
        out["weights"] = result["weights"]
    tag = result.get("pretrained")
    if tag is not None:
        out["pretrained"] = True if tag == "true" else (tag if "." in tag else f"{name}.{tag}")
    if "label" in result:
        out["label"] = result["label"]
    elif label is not None:
        out["label"] = label
    elif "weights" in out or "pretrained" in out:
        out["label"] = f"{name}_ft"
    return out


def _is_timm_name(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))

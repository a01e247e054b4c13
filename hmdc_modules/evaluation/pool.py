"""The pool of architectures a condensed set is evaluated on, and each one's training recipe.

A [`ModelSpec`][hmdc_modules.evaluation.pool.ModelSpec] names one architecture (``"convnet"`` or any timm model),
its SGD learning rate (by default the per-model rate of the HMDC evaluation protocol, see
[`default_learning_rate`][hmdc_modules.evaluation.pool.default_learning_rate]), its input size and, optionally, a
local pretrained weights file. Nothing is ever downloaded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from hmdc_modules._validation import check_positive_int, describe

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "PAPER_LEARNING_RATES",
    "PAPER_POOL",
    "ModelSpec",
    "default_learning_rate",
    "model_family",
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

_VIT_MODULES = ("vision_transformer", "deit", "vision_transformer_relpos", "eva")


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
    ViT-Base $10^{-4}$ (method doc, section 7); any other name
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

    A ViT is a timm model defined in timm's ``vision_transformer``, ``deit``, ``vision_transformer_relpos`` or
    ``eva`` module: exactly the models [`create_model`][hmdc_modules.condensation.models.factory.create_model] passes
    ``image_size`` and ``patch_size`` to. Everything else, ``"convnet"`` included, counts as a CNN. The family
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
    module = timm.models.model_entrypoint(name.split(".", 1)[0]).__module__
    return "vit" if module.endswith(_VIT_MODULES) else "cnn"


@dataclass(frozen=True)
class ModelSpec:
    """One architecture of the evaluation pool and how it is trained.

    Args:
        name: ``"convnet"`` (the library's ConvNet-3) or any timm model name (``"resnet18"``,
            ``"vit_tiny_patch16_224"``, ``"test_vit"``, ...).
        lr: SGD learning rate; ``None`` takes
            [`default_learning_rate`][hmdc_modules.evaluation.pool.default_learning_rate] of ``name``.
        weights: A local weights file to start from (see
            [`load_weights`][hmdc_modules.condensation.models.factory.load_weights]; the classifier head stays freshly
            initialised). ``None`` (the default) trains from scratch. Never downloaded.
        image_size: The side the model sees: the 32x32 images are resized to it (bilinear) after augmentation and
            before testing.
        patch_size: Patch size of a ViT; ``None`` picks one: ``image_size // 8`` below 224 (4 at 32) and the
            architecture's own from 224 on. Must be ``None`` for other models.
        width: Channels of the ConvNet (``None``: 128, the ConvNet-3); a small width gives a tiny model for quick
            checks. Must be ``None`` for other models.
        label: The name the model has in the reports and in the output folder; ``None`` uses ``name``. Two specs of
            the same architecture with different settings need different labels.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``name`` is not ``"convnet"`` or a timm model name, ``lr`` is not a finite positive number,
            a size is below 1, or ``patch_size``/``width`` is given for a model it does not apply to.

    Examples:
        >>> spec = ModelSpec("convnet", width=8)
        >>> spec.learning_rate, spec.family, spec.display_name
        (0.01, 'cnn', 'convnet')
        >>> ModelSpec("test_vit").effective_patch_size
        4
    """

    name: str
    lr: float | None = None
    weights: str | None = None
    image_size: int = 32
    patch_size: int | None = None
    width: int | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        family = model_family(self.name)  # checks the name
        if self.lr is not None:
            if isinstance(self.lr, bool) or not isinstance(self.lr, int | float):
                raise TypeError(f"`lr` must be a float or None, got {describe(self.lr)}")
            if not (math.isfinite(self.lr) and self.lr > 0):
                raise ValueError(f"`lr` must be a finite number > 0, got {self.lr}")
            object.__setattr__(self, "lr", float(self.lr))
        if self.weights is not None:
            if not isinstance(self.weights, str | os.PathLike):
                raise TypeError(f"`weights` must be a path or None, got {describe(self.weights)}")
            object.__setattr__(self, "weights", os.fspath(self.weights))
        check_positive_int("image_size", self.image_size)
        if self.patch_size is not None:
            check_positive_int("patch_size", self.patch_size)
            if family != "vit":
                raise ValueError(
                    f"`patch_size` only applies to vision transformers, got {self.patch_size} for {self.name!r}"
                )
        if self.width is not None:
            check_positive_int("width", self.width)
            if self.name.lower() != "convnet":
                raise ValueError(f"`width` only applies to 'convnet', got width={self.width} for {self.name!r}")
        if self.label is not None:
            if not isinstance(self.label, str):
                raise TypeError(f"`label` must be a str or None, got {describe(self.label)}")
            if not self.label.strip():
                raise ValueError(f"`label` must not be empty, got {self.label!r}")

    @property
    def display_name(self) -> str:
        """The name in reports and file names: ``label``, else ``name``."""
        return self.label if self.label is not None else self.name

    @property
    def family(self) -> str:
        """``"vit"`` or ``"cnn"`` (see [`model_family`][hmdc_modules.evaluation.pool.model_family])."""
        return model_family(self.name)

    @property
    def learning_rate(self) -> float:
        """The SGD learning rate used: ``lr``, else the protocol's default for ``name``."""
        return self.lr if self.lr is not None else default_learning_rate(self.name)

    @property
    def effective_patch_size(self) -> int | None:
        """The ViT patch size used (``None``: the architecture's own, and always for non-ViTs)."""
        if self.family != "vit":
            return None
        if self.patch_size is not None:
            return self.patch_size
        return max(1, self.image_size // 8) if self.image_size < 224 else None

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain JSON values (learning rate and patch size filled in).

        Two specs that train the same model the same way give equal dictionaries; the runner compares them to
        decide whether a stored result still applies.
        """
        return {
            "name": self.name,
            "label": self.display_name,
            "family": self.family,
            "lr": self.learning_rate,
            "weights": self.weights,
            "image_size": self.image_size,
            "patch_size": self.effective_patch_size,
            "width": self.width,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Rebuild a spec from [`to_dict`][hmdc_modules.evaluation.pool.ModelSpec.to_dict]'s output.

        Raises:
            TypeError: If ``data`` is not a mapping.
            ValueError: If ``data`` lacks ``name`` or holds invalid values.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"`data` must be a dict, got {describe(data)}")
        if "name" not in data:
            raise ValueError(f"`data` must hold a 'name', got keys {sorted(data)}")
        family = model_family(data["name"])
        return cls(
            name=data["name"],
            lr=data.get("lr"),
            weights=data.get("weights"),
            image_size=data.get("image_size", 32),
            patch_size=data.get("patch_size") if family == "vit" else None,
            width=data.get("width"),
            label=data.get("label"),
        )

    def build(self, num_classes: int = 10) -> nn.Module:
        """Create the model, freshly initialised from the global torch RNG (or loaded from ``weights``).

        Fused attention is left on (evaluation needs no double backward, unlike gradient matching).

        Args:
            num_classes: Number of output classes.

        Returns:
            The model on the CPU, in training mode.

        Raises:
            FileNotFoundError: If ``weights`` names no file.
            ValueError: If the weights file matches no tensor of the model.
        """
        check_positive_int("num_classes", num_classes)
        if self.name.lower() == "convnet":
            from hmdc_modules.condensation.models import ConvNet
            from hmdc_modules.condensation.models.factory import load_weights

            model: nn.Module = ConvNet(num_classes=num_classes, width=self.width or 128, image_size=self.image_size)
            if self.weights is not None:
                load_weights(model, self.weights)
        else:
            from hmdc_modules.condensation.models import create_model

            model = create_model(
                self.name,
                num_classes,
                image_size=self.image_size,
                patch_size=self.effective_patch_size,
                weights=self.weights,
            )
            for module in model.modules():  # create_model switches it off for gradient matching
                if isinstance(getattr(module, "fused_attn", None), bool):
                    module.fused_attn = True
        return model.train()

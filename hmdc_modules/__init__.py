"""hmdc_modules: Heterogeneous Model Dataset Condensation (HMDC, ECCV 2024) as composable PyTorch modules.

The top level holds the method: the four modules (and the feature-statistics matcher for distribution matching),
the per-class objective that composes them, the adapters and feature types, and the functional forms. The
condensation kit (augmentation, formation, selection, models, datasets, I/O, plots) lives in
[`hmdc_modules.condensation`][hmdc_modules.condensation], the evaluation suite in
[`hmdc_modules.evaluation`][hmdc_modules.evaluation].
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import Any

from hmdc_modules.adapters import (
    CNNAdapter,
    FeatureAdapter,
    HookAdapter,
    TimmAdapter,
    TorchvisionAdapter,
    ViTAdapter,
    auto_adapter,
    disable_fused_attention,
)
from hmdc_modules.balancer import BalancerRecord, GradientBalancer
from hmdc_modules.decomposition import SpatialSemanticDecomposer
from hmdc_modules.distillation import MutualDistillationLoss
from hmdc_modules.feature_matching import HeterogeneousFeatureMatcher
from hmdc_modules.features import AdapterOutput, FeatureMap, FeatureSpec, logits_of
from hmdc_modules.functional import (
    balance_weights,
    gradient_distance,
    match_gradients,
    mean_embedding_distance,
    mutual_distillation_loss,
    normalize_image_gradients,
    soft_cross_entropy,
)
from hmdc_modules.matching import HeterogeneousGradientMatcher
from hmdc_modules.objective import HMDCObjective, NonFiniteLossError, ObjectiveStep, hmdc_losses

try:
    __version__ = _version("hmdc_modules")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AdapterOutput",
    "BalancerRecord",
    "CNNAdapter",
    "FeatureAdapter",
    "FeatureMap",
    "FeatureSpec",
    "GradientBalancer",
    "HMDCObjective",
    "HeterogeneousFeatureMatcher",
    "HeterogeneousGradientMatcher",
    "HookAdapter",
    "MutualDistillationLoss",
    "NonFiniteLossError",
    "ObjectiveStep",
    "SpatialSemanticDecomposer",
    "TimmAdapter",
    "TorchvisionAdapter",
    "ViTAdapter",
    "__version__",
    "auto_adapter",
    "balance_weights",
    "disable_fused_attention",
    "gradient_distance",
    "hmdc_losses",
    "logits_of",
    "match_gradients",
    "mean_embedding_distance",
    "mutual_distillation_loss",
    "normalize_image_gradients",
    "soft_cross_entropy",
]

# Names that version 0.1 exported at the top level and documented there; they now live in the condensation kit.
_MOVED_TO_CONDENSATION = frozenset(
    {
        "CIFAR10_CLASSES",
        "CIFAR10_MEAN",
        "CIFAR10_STD",
        "AugmentParams",
        "ConvNet",
        "CutMix",
        "DifferentiableAugment",
        "KMeansResult",
        "SyntheticSet",
        "create_model",
        "cutmix",
        "decode_formation",
        "decode_formation_labels",
        "denormalize",
        "encode_formation",
        "kmeans",
        "load_checkpoint",
        "load_cifar10",
        "load_synthetic_set",
        "nearest_to_centroids",
        "normalize",
        "plot_balancer_history",
        "plot_metrics",
        "read_synthetic_set",
        "save_checkpoint",
        "save_image_grid",
        "save_synthetic_set",
        "select_representatives",
    }
)


def __getattr__(name: str) -> Any:
    """Deprecated aliases: ``hmdc_modules.ConvNet`` and friends, now under ``hmdc_modules.condensation``."""
    if name in _MOVED_TO_CONDENSATION:
        import warnings

        warnings.warn(
            f"hmdc_modules.{name} moved to hmdc_modules.condensation.{name}; the top-level alias will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(import_module("hmdc_modules.condensation"), name)
    raise AttributeError(f"module 'hmdc_modules' has no attribute {name!r}")

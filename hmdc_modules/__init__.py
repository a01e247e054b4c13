"""hmdc_modules: Heterogeneous Model Dataset Condensation (HMDC, ECCV 2024) as composable PyTorch modules."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from hmdc_modules.adapters import (
    CNNAdapter,
    FeatureAdapter,
    HookAdapter,
    TimmAdapter,
    TorchvisionAdapter,
    ViTAdapter,
    auto_adapter,
)
from hmdc_modules.augment import AugmentParams, CutMix, DifferentiableAugment, cutmix
from hmdc_modules.balancer import BalancerRecord, GradientBalancer
from hmdc_modules.checkpoint import load_checkpoint, save_checkpoint
from hmdc_modules.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    SyntheticSet,
    denormalize,
    load_cifar10,
    load_synthetic_set,
    normalize,
    read_synthetic_set,
    save_synthetic_set,
)
from hmdc_modules.decomposition import SpatialSemanticDecomposer
from hmdc_modules.distillation import MutualDistillationLoss
from hmdc_modules.features import AdapterOutput, FeatureMap, FeatureSpec
from hmdc_modules.formation import decode_formation, decode_formation_labels, encode_formation
from hmdc_modules.functional import normalize_image_gradients, soft_cross_entropy
from hmdc_modules.matching import HeterogeneousGradientMatcher
from hmdc_modules.models import ConvNet, create_model
from hmdc_modules.plotting import plot_balancer_history, plot_metrics, save_image_grid
from hmdc_modules.selection import KMeansResult, kmeans, nearest_to_centroids, select_representatives

try:
    __version__ = _version("hmdc_modules")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "AdapterOutput",
    "AugmentParams",
    "BalancerRecord",
    "CNNAdapter",
    "ConvNet",
    "CutMix",
    "DifferentiableAugment",
    "FeatureAdapter",
    "FeatureMap",
    "FeatureSpec",
    "GradientBalancer",
    "HeterogeneousGradientMatcher",
    "HookAdapter",
    "KMeansResult",
    "MutualDistillationLoss",
    "SpatialSemanticDecomposer",
    "SyntheticSet",
    "TimmAdapter",
    "TorchvisionAdapter",
    "ViTAdapter",
    "__version__",
    "auto_adapter",
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
    "normalize_image_gradients",
    "plot_balancer_history",
    "plot_metrics",
    "read_synthetic_set",
    "save_checkpoint",
    "save_image_grid",
    "save_synthetic_set",
    "select_representatives",
    "soft_cross_entropy",
]

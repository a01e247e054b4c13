"""The condensation kit: what a condensation loop needs around the HMDC modules.

Augmentation, multi-formation, real-sample selection, models, datasets, the synthetic-set file format, run I/O
(atomic writes, checkpoints) and plots. The method itself (balancer, matcher, decomposer, distillation, objective,
adapters) is exported by [`hmdc_modules`][hmdc_modules].
"""

from hmdc_modules.condensation.augment import AugmentParams, CutMix, DifferentiableAugment, cutmix
from hmdc_modules.condensation.datasets import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DatasetDownloadError,
    ImageData,
    dataset_classes,
    load_cifar10,
    load_image_folder,
    parse_classes,
)
from hmdc_modules.condensation.formation import decode_formation, decode_formation_labels, encode_formation
from hmdc_modules.condensation.io import (
    CheckpointError,
    FileFormatError,
    LoadedCheckpoint,
    atomic_torch_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    load_latest_checkpoint,
    load_torch_file,
    previous_checkpoint_path,
    save_checkpoint,
    save_figure,
)
from hmdc_modules.condensation.models import ConvNet, create_model, disable_fused_attention, load_weights
from hmdc_modules.condensation.normalization import denormalize, normalize
from hmdc_modules.condensation.plots import plot_balancer_history, plot_metrics, save_image_grid
from hmdc_modules.condensation.seeding import SEED_MODULUS, derive_seed
from hmdc_modules.condensation.selection import (
    KMeansResult,
    embed,
    kmeans,
    nearest_to_centroids,
    select_representatives,
)
from hmdc_modules.condensation.synthetic import (
    SyntheticSet,
    SyntheticSetError,
    load_synthetic_set,
    read_synthetic_set,
    save_synthetic_set,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "SEED_MODULUS",
    "AugmentParams",
    "CheckpointError",
    "ConvNet",
    "CutMix",
    "DatasetDownloadError",
    "DifferentiableAugment",
    "FileFormatError",
    "ImageData",
    "KMeansResult",
    "LoadedCheckpoint",
    "SyntheticSet",
    "SyntheticSetError",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "create_model",
    "cutmix",
    "dataset_classes",
    "decode_formation",
    "decode_formation_labels",
    "denormalize",
    "derive_seed",
    "disable_fused_attention",
    "embed",
    "encode_formation",
    "kmeans",
    "load_checkpoint",
    "load_cifar10",
    "load_image_folder",
    "load_latest_checkpoint",
    "load_synthetic_set",
    "load_torch_file",
    "load_weights",
    "nearest_to_centroids",
    "normalize",
    "parse_classes",
    "plot_balancer_history",
    "plot_metrics",
    "previous_checkpoint_path",
    "read_synthetic_set",
    "save_checkpoint",
    "save_figure",
    "save_image_grid",
    "save_synthetic_set",
    "select_representatives",
]

"""The condensation kit: what a condensation loop needs around the HMDC modules.

Augmentation, multi-formation, real-sample selection, models (with pretrained weights), datasets and splits, the
synthetic-set file format, run I/O (atomic writes, checkpoints, run folders), seeds and plots. The method itself
(balancer, matchers, decomposer, distillation, objective, adapters) is exported by [`hmdc_modules`][hmdc_modules].
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
from hmdc_modules.condensation.models import (
    VIT_MODULES,
    WEIGHTS_FORMAT,
    ConvNet,
    PretrainedWeightsUnavailable,
    WeightsInfo,
    check_pretrained_available,
    create_model,
    disable_fused_attention,
    head_parameter_names,
    is_vision_transformer,
    load_weights,
    read_weights_info,
    reset_head,
    save_weights_file,
)
from hmdc_modules.condensation.normalization import denormalize, normalize
from hmdc_modules.condensation.plots import plot_balancer_history, plot_metrics, save_image_grid
from hmdc_modules.condensation.precision import PRECISIONS, check_precision, precision_context
from hmdc_modules.condensation.run_folder import RunFolder, RunFolderError, resume_settings
from hmdc_modules.condensation.seeding import SEED_MODULUS, derive_seed
from hmdc_modules.condensation.selection import (
    KMeansResult,
    embed,
    kmeans,
    nearest_to_centroids,
    select_representatives,
)
from hmdc_modules.condensation.splits import PC_SPLIT_SEED, pc_split, subset_indices
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
    "PC_SPLIT_SEED",
    "PRECISIONS",
    "SEED_MODULUS",
    "VIT_MODULES",
    "WEIGHTS_FORMAT",
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
    "PretrainedWeightsUnavailable",
    "RunFolder",
    "RunFolderError",
    "SyntheticSet",
    "SyntheticSetError",
    "WeightsInfo",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_precision",
    "check_pretrained_available",
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
    "head_parameter_names",
    "is_vision_transformer",
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
    "pc_split",
    "plot_balancer_history",
    "plot_metrics",
    "precision_context",
    "previous_checkpoint_path",
    "read_synthetic_set",
    "read_weights_info",
    "reset_head",
    "resume_settings",
    "save_checkpoint",
    "save_figure",
    "save_image_grid",
    "save_synthetic_set",
    "save_weights_file",
    "select_representatives",
    "subset_indices",
]

"""Deprecated location of the data names; import them from [`hmdc_modules.condensation`][hmdc_modules.condensation].

The former ``data`` module did three jobs and is now split by job:
[`datasets`][hmdc_modules.condensation.datasets] (CIFAR-10 and any image folder),
[`normalization`][hmdc_modules.condensation.normalization] and [`synthetic`][hmdc_modules.condensation.synthetic]
(the synthetic-set file format). This module only re-exports the names it used to define, so that existing imports
keep working; it will be removed.
"""

from hmdc_modules.condensation.datasets import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, load_cifar10
from hmdc_modules.condensation.normalization import denormalize, normalize
from hmdc_modules.condensation.synthetic import (
    SyntheticSet,
    load_synthetic_set,
    read_synthetic_set,
    save_synthetic_set,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "SyntheticSet",
    "denormalize",
    "load_cifar10",
    "load_synthetic_set",
    "normalize",
    "read_synthetic_set",
    "save_synthetic_set",
]

"""Functional forms of the library's losses and transforms (stateless; the modules call these)."""

from hmdc_modules.functional.balancing import balance_weights, normalize_image_gradients
from hmdc_modules.functional.distillation import mutual_distillation_loss
from hmdc_modules.functional.feature_matching import STATISTIC_DISTANCES, mean_embedding_distance
from hmdc_modules.functional.matching import gradient_distance, match_gradients, soft_cross_entropy

__all__ = [
    "STATISTIC_DISTANCES",
    "balance_weights",
    "gradient_distance",
    "match_gradients",
    "mean_embedding_distance",
    "mutual_distillation_loss",
    "normalize_image_gradients",
    "soft_cross_entropy",
]

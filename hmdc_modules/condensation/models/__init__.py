"""Models HMDC condenses with: the ConvNet of the condensation literature, a by-name factory, pretrained weights."""

from hmdc_modules.condensation.models.convnet import ConvNet
from hmdc_modules.condensation.models.factory import (
    VIT_MODULES,
    create_model,
    disable_fused_attention,
    is_vision_transformer,
    load_weights,
)
from hmdc_modules.condensation.models.pretrained import (
    WEIGHTS_FORMAT,
    PretrainedWeightsUnavailable,
    WeightsInfo,
    check_pretrained_available,
    head_parameter_names,
    read_weights_info,
    reset_head,
    save_weights_file,
)

__all__ = [
    "VIT_MODULES",
    "WEIGHTS_FORMAT",
    "ConvNet",
    "PretrainedWeightsUnavailable",
    "WeightsInfo",
    "check_pretrained_available",
    "create_model",
    "disable_fused_attention",
    "head_parameter_names",
    "is_vision_transformer",
    "load_weights",
    "read_weights_info",
    "reset_head",
    "save_weights_file",
]

"""Models HMDC condenses with: the ConvNet of the condensation literature, and a by-name factory."""

from hmdc_modules.condensation.models.convnet import ConvNet
from hmdc_modules.condensation.models.factory import create_model, disable_fused_attention, load_weights

__all__ = ["ConvNet", "create_model", "disable_fused_attention", "load_weights"]

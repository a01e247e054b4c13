"""The adapter protocol: one forward pass of any model gives its logits and its tapped, decomposed features."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmdc_modules._validation import check_positive_int, check_tensor, describe
from hmdc_modules.adapters.layout import _size_pair
from hmdc_modules.features import AdapterOutput, FeatureMap, FeatureSpec

__all__ = ["FeatureAdapter"]


def _check_module(name: str, model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`{name}` must be a torch.nn.Module, got {describe(model)}")
    return model


def _first_conv_in_channels(model: nn.Module) -> int | None:
    """Input channels of the first ``Conv2d`` registered in ``model`` (its stem), ``None`` when it has none."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


def _guess_in_channels(model: nn.Module) -> int:
    """Input channels of the first ``Conv2d`` registered in ``model`` (3 when it has none)."""
    channels = _first_conv_in_channels(model)
    return 3 if channels is None else channels


def _floating_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter or buffer, ``None`` when it has none."""
    like = next((t for t in chain(model.parameters(), model.buffers()) if t.is_floating_point()), None)
    return None if like is None else like.dtype


def _probe_input(model: nn.Module, batch: int, size: tuple[int, int], in_channels: int) -> Tensor:
    """Zero images on the device and with the floating dtype of the model's first floating parameter/buffer."""
    like = next((t for t in chain(model.parameters(), model.buffers()) if t.is_floating_point()), None)
    if like is None:
        return torch.zeros(batch, in_channels, *size)
    return torch.zeros(batch, in_channels, *size, device=like.device, dtype=like.dtype)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and gradients off; restore each submodule's own mode afterwards."""
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for sub, training in modes:
            sub.training = training


class FeatureAdapter(nn.Module, ABC):
    r"""Runs a model once and returns its logits with its tapped features, decomposed (abstract base).

    Each tapped layer becomes a [`FeatureMap`][hmdc_modules.features.FeatureMap]: a semantic vector and a
    channels-first spatial map, whatever the model emitted. When ``input_size`` is set, images of another size
    are first resized bilinearly with ``align_corners=True`` (the method's $R_m$), so one batch can feed models
    with different native resolutions. Subclasses implement ``_forward_features`` and ``layer_names``.

    The wrapped model is the submodule ``model``: ``state_dict`` keys are the model's under ``model.``, and
    ``adapter.train()``/``adapter.eval()``/``adapter.to(...)`` apply to it.

    Args:
        model: The wrapped network.
        input_size: The model's input size $(H_m, W_m)$ (an int means square), or ``None`` to feed images as
            they come.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module`` or ``input_size`` is not an int/pair.
        ValueError: If ``input_size`` holds a value below 1.

    Shape:
        - Input: $(B, C, H, W)$.
        - Output: logits $(B, K)$ and $L$ feature maps, semantic $(B, C_l)$, spatial $(B, C_l, H_l, W_l)$.

    Examples:
        >>> from hmdc_modules.adapters import CNNAdapter
        >>> from hmdc_modules.condensation.models.convnet import ConvNet
        >>> adapter = CNNAdapter(ConvNet(width=16), input_size=32)  # a concrete FeatureAdapter
        >>> out = adapter(torch.zeros(2, 3, 64, 64))  # resized to 32x32 first
        >>> out.logits.shape, len(out.features), out.features[0].spatial.shape
        (torch.Size([2, 10]), 3, torch.Size([2, 16, 16, 16]))
    """

    def __init__(self, model: nn.Module, *, input_size: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model = _check_module("model", model)
        self.input_size = None if input_size is None else _size_pair("input_size", input_size)
        self._in_channels = _first_conv_in_channels(self.model)
        self._spec_cache: dict[tuple[int, int, int], tuple[FeatureSpec, ...]] = {}

    @property
    @abstractmethod
    def layer_names(self) -> tuple[str, ...]:
        """Names of the tapped layers, shallow to deep (one per returned feature map)."""

    @abstractmethod
    def _forward_features(self, x: Tensor) -> tuple[Tensor, list[FeatureMap]]:
        """Run the model once on (already resized) ``x``; return its logits and one feature map per layer."""

    def forward(self, x: Tensor) -> AdapterOutput:
        """Run the model once on ``x`` (resized to ``input_size`` first when set).

        Args:
            x: Images, channels first.

        Returns:
            The logits and one [`FeatureMap`][hmdc_modules.features.FeatureMap] per layer of ``layer_names``,
            shallow to deep. Gradients flow from both to ``x`` and to the model's parameters.

        Raises:
            TypeError: If ``x`` is not a floating-point tensor, or its dtype differs from the model's (unless
                ``torch.autocast`` casts both, which it never does for float64); the message gives both dtypes.
            ValueError: If ``x`` is not 4-D, has an empty batch, or its channel count differs from the input
                channels of the model's first ``Conv2d`` (the message gives both counts).

        Shape:
            - x: $(B, C, H, W)$.
            - Output: logits $(B, K)$; feature $l$: semantic $(B, C_l)$, spatial $(B, C_l, H_l, W_l)$.
        """
        check_tensor("x", x, ndim=4, floating=True, nonempty=True)
        self._check_input_fits(x)
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=True)
        logits, features = self._forward_features(x)
        return AdapterOutput(logits, tuple(features))

    def _check_input_fits(self, x: Tensor) -> None:
        """Refuse images whose channel count or dtype the model cannot take, before torch fails deep inside."""
        if self._in_channels is not None and x.shape[1] != self._in_channels:
            raise ValueError(
                f"`x` has {x.shape[1]} channels (shape {tuple(x.shape)}) but {type(self.model).__name__} takes "
                f"{self._in_channels} input channels (its first Conv2d); pass images with {self._in_channels} channels"
            )
        dtype = _floating_dtype(self.model)
        # Under autocast, float32/16/bf16 inputs and weights are cast for the op; float64 never is.
        autocast = torch.is_autocast_enabled(x.device.type) and torch.float64 not in (x.dtype, dtype)
        if dtype is not None and x.dtype != dtype and not autocast:
            raise TypeError(
                f"`x` has dtype {x.dtype} but {type(self.model).__name__} has {dtype} parameters; convert one to "
                f"the other (e.g. x.to({dtype}) or model.to({x.dtype})), or run under torch.autocast"
            )

    def feature_specs(
        self, image_size: int | tuple[int, int], *, in_channels: int | None = None
    ) -> tuple[FeatureSpec, ...]:
        """Describe each tapped layer (name, channels, spatial size) for images of ``image_size``.

        Found by a probe: one forward of two zero images under ``torch.no_grad``, with the model temporarily
        in eval mode (every submodule's own mode is restored afterwards, and BatchNorm statistics do not
        change). The result is cached per image size and channel count.

        Args:
            image_size: Size of the images that will be fed to ``forward`` (before any ``input_size`` resize).
            in_channels: Channels of those images; ``None`` takes the input channels of the model's first
                ``Conv2d`` (3 if it has none).

        Returns:
            One [`FeatureSpec`][hmdc_modules.features.FeatureSpec] per layer, shallow to deep.

        Raises:
            TypeError: If ``image_size`` or ``in_channels`` is not an int (pair).
            ValueError: If a value is below 1.

        Examples:
            >>> from hmdc_modules.adapters import CNNAdapter
            >>> from hmdc_modules.condensation.models.convnet import ConvNet
            >>> CNNAdapter(ConvNet(width=16)).feature_specs(32)[-1]
            FeatureSpec(name='features.2.pool', channels=16, height=4, width=4)
        """
        size = _size_pair("image_size", image_size)
        channels = (
            _guess_in_channels(self.model) if in_channels is None else check_positive_int("in_channels", in_channels)
        )
        key = (channels, *size)
        if key not in self._spec_cache:
            with _eval_mode(self):
                out = self(_probe_input(self.model, 2, size, channels))
            self._spec_cache[key] = tuple(
                FeatureSpec(name, int(fm.spatial.shape[1]), int(fm.spatial.shape[2]), int(fm.spatial.shape[3]))
                for name, fm in zip(self.layer_names, out.features, strict=True)
            )
        return self._spec_cache[key]

    def extra_repr(self) -> str:
        """The tapped layers and input size, shown in ``repr(adapter)``."""
        return f"layers={list(self.layer_names)}, input_size={self.input_size}"

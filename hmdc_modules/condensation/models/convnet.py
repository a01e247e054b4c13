"""The ConvNet of the dataset-condensation literature (ConvNet-3 at CIFAR-10 defaults).

Each of the ``depth`` blocks is ``Conv3x3 -> norm -> ReLU -> 2x2 pool``; a linear classifier reads the flattened
output of the last block. The modules are named so that the tapped outputs read naturally:
``features.0.pool``, ``features.1.pool``, ... (listed by
[`ConvNet.feature_layers`][hmdc_modules.condensation.models.convnet.ConvNet.feature_layers]).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from hmdc_modules._validation import check_choice, check_positive_int, check_tensor

__all__ = ["ConvNet"]

_NORMS = ("instance", "batch", "none")
_POOLINGS = ("avg", "max")


def _make_norm(norm: str, width: int) -> nn.Module:
    if norm == "instance":
        # One group per channel: instance normalisation with a per-channel affine, the field's "instancenorm".
        return nn.GroupNorm(width, width, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(width)
    return nn.Identity()


class ConvNet(nn.Module):
    r"""ConvNet-$D$: $D$ blocks of ``Conv3x3 -> norm -> ReLU -> 2x2 pool``, then a linear classifier.

    At the CIFAR-10 defaults (``width=128``, ``depth=3``, ``image_size=32``, instance norm, average pooling)
    this is the ConvNet-3 used by DC/DSA/DM/IDC/HMDC, with 320,010 parameters.

    Block $k$ maps $[B, C_{k-1}, H_{k-1}, W_{k-1}]$ to $[B, w, \lfloor H_{k-1}/2 \rfloor, \lfloor W_{k-1}/2 \rfloor]$
    (the 3x3 convolution has padding 1). The classifier is
    ``Linear(w * S^2 -> num_classes)`` with $S = \lfloor H / 2^D \rfloor$.

    Args:
        num_classes: Number of output classes $K$.
        in_channels: Number of input channels.
        width: Channels $w$ of every convolution.
        depth: Number of blocks $D$.
        image_size: Input side $H = W$; fixes the classifier's input size.
        norm: ``"instance"`` (``GroupNorm(w, w)`` with affine, the default), ``"batch"`` (``BatchNorm2d``) or
            ``"none"``.
        pooling: ``"avg"`` or ``"max"`` 2x2 pooling with stride 2.

    Raises:
        TypeError: If an integer argument is not an int.
        ValueError: If an integer is below 1, ``norm``/``pooling`` is unknown, or ``image_size`` is too small for
            ``depth`` halvings.

    Shape:
        - Input: $(B, C_{in}, H, H)$ with $H$ equal to ``image_size``.
        - Output: $(B, K)$.

    Examples:
        >>> net = ConvNet(num_classes=10)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> net.feature_layers
        ('features.0.pool', 'features.1.pool', 'features.2.pool')
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 128,
        depth: int = 3,
        image_size: int = 32,
        norm: str = "instance",
        pooling: str = "avg",
    ) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.width = check_positive_int("width", width)
        self.depth = check_positive_int("depth", depth)
        self.image_size = check_positive_int("image_size", image_size)
        self.norm = check_choice("norm", norm, _NORMS)
        self.pooling = check_choice("pooling", pooling, _POOLINGS)
        final_side = image_size // 2**depth
        if final_side < 1:
            raise ValueError(
                f"`image_size` must be at least {2**depth} for depth {depth} (each block halves it), got {image_size}"
            )
        blocks = []
        channels = in_channels
        for _ in range(depth):
            pool: nn.Module = nn.AvgPool2d(2, stride=2) if pooling == "avg" else nn.MaxPool2d(2, stride=2)
            blocks.append(
                nn.Sequential(
                    OrderedDict(
                        conv=nn.Conv2d(channels, width, kernel_size=3, padding=1),
                        norm=_make_norm(norm, width),
                        relu=nn.ReLU(inplace=False),
                        pool=pool,
                    )
                )
            )
            channels = width
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(width * final_side**2, num_classes)

    @property
    def feature_layers(self) -> tuple[str, ...]:
        """Names of the pool outputs, shallow to deep: the layers HMDC taps (one per block, no duplicate).

        Returns:
            ``("features.0.pool", ..., f"features.{depth - 1}.pool")``.
        """
        return tuple(f"features.{k}.pool" for k in range(self.depth))

    def reset_parameters(self) -> None:
        """Re-randomise every layer (convolutions, norms, classifier) with PyTorch's default initialisation.

        BatchNorm running statistics are reset too. Use this to draw a fresh network between condensation
        iterations without rebuilding the module (optimisers holding its parameters stay valid).

        Examples:
            >>> net = ConvNet(width=8)
            >>> before = net.classifier.weight.clone()
            >>> net.reset_parameters()
            >>> bool((net.classifier.weight != before).any())
            True
        """
        for module in self.modules():
            if module is not self and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """Classify a batch of images.

        Args:
            x: Images, channels first.

        Returns:
            Logits.

        Raises:
            TypeError: If ``x`` is not a floating-point tensor.
            ValueError: If ``x`` is not 4-D or its channels or size do not match the network.

        Shape:
            - x: $(B, C_{in}, H, W)$.
            - Output: $(B, K)$.
        """
        check_tensor("x", x, ndim=4, floating=True)
        if x.shape[1] != self.in_channels or x.shape[-2] != self.image_size or x.shape[-1] != self.image_size:
            raise ValueError(
                f"`x` must have shape (B, {self.in_channels}, {self.image_size}, {self.image_size}), "
                f"got {tuple(x.shape)}"
            )
        return self.classifier(torch.flatten(self.features(x), 1))

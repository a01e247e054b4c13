"""Differentiable image augmentation with a shareable seed (DSA, IDC variant) and cutmix.

[`DifferentiableAugment`][hmdc_modules.condensation.augment.DifferentiableAugment] applies, in this order,

1. a horizontal flip (probability 0.5),
2. colour jitter: brightness, then saturation, then contrast,
3. exactly one geometric op drawn from ``geometric`` (``"crop"``: integer translation with zero padding;
   ``"scale"``: independent horizontal/vertical stretch; ``"rotate"``), through ``F.affine_grid`` and
   ``F.grid_sample``,
4. cutout (one zeroed square).

Every step is differentiable with respect to the images, which is what gradient matching needs: the loss on
augmented synthetic images is backpropagated to the synthetic pixels. Gradient matching compares a real and a
synthetic batch under the *same* transform, so a seeded call draws one set of parameters from a private
generator seeded with ``seed`` and shares it over the whole batch ("Siamese" augmentation): the same seed gives
the same transform whatever the batch size. Seeded calls never touch the global torch RNG.

The random parameters are drawn up front into an
[`AugmentParams`][hmdc_modules.condensation.augment.AugmentParams], always on a CPU (or the given) generator and in
a fixed order, then moved to the images' device, so CPU and GPU runs with the same seed see the same transform.

[`cutmix`][hmdc_modules.condensation.augment.cutmix] pastes a random box of a partner image (a random permutation
of the batch) into every image and mixes the targets by the pasted area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmdc_modules._validation import (
    check_non_negative_float,
    check_positive_int,
    check_same_batch,
    check_tensor,
    describe,
)

__all__ = ["GEOMETRIC_OPS", "AugmentParams", "CutMix", "DifferentiableAugment", "cutmix"]

GEOMETRIC_OPS: tuple[str, ...] = ("crop", "scale", "rotate")
"""Names of the geometric ops; ``AugmentParams.geometric`` holds indices into this tuple (-1: none)."""

_NUM_DRAWS = 12  # uniforms per sample, in a fixed order (see DifferentiableAugment.sample_params)


class AugmentParams(NamedTuple):
    r"""The drawn parameters of one [`DifferentiableAugment`][hmdc_modules.condensation.augment.DifferentiableAugment]
    call.

    Every field is resolved (ready to apply) and holds the identity value for a disabled op, so the transform is
    fully determined by these tensors and the image size. Lengths are in fractions of the image side, so the same
    parameters apply to images of any resolution.

    Attributes:
        flip: Whether each image is flipped horizontally (bool).
        brightness: Additive brightness shift $b$ (identity: 0).
        saturation: Saturation factor $s$ (identity: 1).
        contrast: Contrast factor $k$ (identity: 1).
        geometric: Index of the chosen geometric op into ``GEOMETRIC_OPS``, -1 for none (int64, informative: the
            transform itself is built from ``translation``, ``scale`` and ``angle``; when several of them are not
            identity, as in hand-built parameters, the content is scaled, then rotated, then shifted).
        translation: Content shift $(t_x, t_y)$ as a fraction of the width and height, positive right and down;
            rounded to whole pixels when applied (identity: 0).
        scale: Content stretch $(s_x, s_y)$ about the image centre (identity: 1).
        angle: Content rotation in degrees about the image centre, counter-clockwise as displayed (identity: 0).
        cutout_center: Cutout centre $(u_x, u_y) \in [0, 1)^2$ as a fraction of the width and height.
        cutout_size: Cutout side as a fraction of the image side (identity: 0).

    Shape:
        - flip, brightness, saturation, contrast, geometric, angle, cutout_size: $(B)$
        - translation, scale, cutout_center: $(B, 2)$
    """

    flip: Tensor
    brightness: Tensor
    saturation: Tensor
    contrast: Tensor
    geometric: Tensor
    translation: Tensor
    scale: Tensor
    angle: Tensor
    cutout_center: Tensor
    cutout_size: Tensor

    @property
    def batch_size(self) -> int:
        """Number of samples the parameters describe."""
        return int(self.flip.shape[0])

    def to(self, device: torch.device | str) -> AugmentParams:
        """Return the same parameters with every tensor on ``device``."""
        return AugmentParams(*(field.to(device) for field in self))

    def expand(self, batch_size: int) -> AugmentParams:
        """Broadcast parameters drawn for one sample to ``batch_size`` samples (a no-op if sizes already match).

        Raises:
            ValueError: If the parameters hold neither 1 nor ``batch_size`` samples.
        """
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"`params` must hold 1 or {batch_size} samples to match the batch, got {self.batch_size}")
        return AugmentParams(*(field.expand(batch_size, *field.shape[1:]) for field in self))


_PARAM_SHAPES = {
    "flip": (),
    "brightness": (),
    "saturation": (),
    "contrast": (),
    "geometric": (),
    "translation": (2,),
    "scale": (2,),
    "angle": (),
    "cutout_center": (2,),
    "cutout_size": (),
}


def _check_params(params: Any) -> AugmentParams:
    if not isinstance(params, AugmentParams):
        raise TypeError(f"`params` must be an AugmentParams, got {describe(params)}")
    batch = params.flip.shape[0] if isinstance(params.flip, Tensor) and params.flip.ndim > 0 else None
    for name, trailing in _PARAM_SHAPES.items():
        field = getattr(params, name)
        if not isinstance(field, Tensor):
            raise TypeError(f"`params.{name}` must be a torch.Tensor, got {describe(field)}")
        if field.ndim != 1 + len(trailing) or tuple(field.shape[1:]) != trailing or field.shape[0] != batch:
            expected = ", ".join(["B", *(str(t) for t in trailing)])
            raise ValueError(
                f"`params.{name}` must have shape ({expected}) with the batch size B of `params.flip`, "
                f"got shape {tuple(field.shape)}"
            )
    return params


def _resolve_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    if seed is not None:
        if generator is not None:
            raise ValueError(f"pass either `seed` or `generator`, not both (got seed={seed!r} and a generator)")
        seed = check_positive_int("seed", seed, minimum=0)
        return torch.Generator().manual_seed(seed)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {describe(generator)}")
    return generator


def _rand(generator: torch.Generator | None, *shape: int) -> Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(*shape, generator=generator, device=device, dtype=torch.float64)


def _round_half_up(x: Tensor) -> Tensor:
    return torch.floor(x + 0.5)


def _affine_theta(params: AugmentParams, height: int, width: int) -> Tensor:
    """Sampling matrices ``theta`` (B, 2, 3) mapping output to input normalised coordinates (float64, CPU/device of
    params)."""
    dtype = torch.float64
    angle = params.angle.to(dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    scale = params.scale.to(dtype)
    half = torch.tensor([width / 2.0, height / 2.0], dtype=dtype, device=angle.device)
    # Inverse content rotation in pixel units, y pointing down: [[c, -s], [s, c]].
    rot_inv = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    # Sampling map in pixel units: q = S^-1 R^-1 (p - k); in normalised units: q = D^-1 S^-1 R^-1 (D p - k).
    linear = rot_inv / scale.unsqueeze(-1)
    matrix = linear * half.view(1, 1, 2) / half.view(1, 2, 1)  # D^-1 @ linear @ D, exact on the diagonal
    shift_px = _round_half_up(params.translation.to(dtype) * half * 2.0)
    offset = -(linear @ shift_px.unsqueeze(-1)).squeeze(-1) / half
    return torch.cat([matrix, offset.unsqueeze(-1)], dim=-1)


def _apply(x: Tensor, params: AugmentParams) -> Tensor:
    batch, _, height, width = x.shape
    params = params.expand(batch)
    view = (batch, 1, 1, 1)

    flip = params.flip.to(torch.bool)
    if bool(flip.any()):
        x = torch.where(flip.to(x.device).view(view), x.flip(-1), x)

    if bool((params.brightness != 0).any()):
        x = x + params.brightness.to(device=x.device, dtype=x.dtype).view(view)
    if bool((params.saturation != 1).any()):
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * params.saturation.to(device=x.device, dtype=x.dtype).view(view) + mean
    if bool((params.contrast != 1).any()):
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * params.contrast.to(device=x.device, dtype=x.dtype).view(view) + mean

    theta = _affine_theta(params, height, width)
    identity = torch.eye(2, 3, dtype=theta.dtype, device=theta.device)
    if not bool((theta == identity).all()):
        grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    if bool((params.cutout_size > 0).any()):
        x = x.masked_fill(_cutout_mask(params, height, width).to(x.device), 0.0)
    return x


def _cutout_mask(params: AugmentParams, height: int, width: int) -> Tensor:
    """Boolean mask (B, 1, H, W), True inside each image's cutout square (clipped to the image)."""
    device = params.cutout_size.device
    sizes = torch.tensor([width, height], dtype=torch.float64, device=device)
    side = _round_half_up(params.cutout_size.to(torch.float64).unsqueeze(-1) * sizes).long()  # (B, 2): (w, h)
    centre = torch.minimum(torch.floor(params.cutout_center.to(torch.float64) * sizes), sizes - 1).long()
    start = centre - side // 2
    stop = start + side
    cols = torch.arange(width, device=device)
    rows = torch.arange(height, device=device)
    in_x = (cols >= start[:, :1]) & (cols < stop[:, :1])  # (B, W)
    in_y = (rows >= start[:, 1:]) & (rows < stop[:, 1:])  # (B, H)
    return (in_y.unsqueeze(-1) & in_x.unsqueeze(-2)).unsqueeze(1)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {describe(value)}")
    return value


def _check_range(name: str, value: Any, low: float, high: float) -> float:
    value = check_non_negative_float(name, value)
    if not low <= value <= high:
        raise ValueError(f"`{name}` must be in [{low}, {high}], got {value}")
    return value


class DifferentiableAugment(nn.Module):
    r"""DSA-style differentiable augmentation (the IDC variant) with an optional shared seed.

    For an image $x$ with $C$ channels, the ops are, in order (each one skipped when disabled):

    - flip: $x \leftarrow x[\ldots, ::-1]$ with probability 0.5;
    - brightness: $x \leftarrow x + (u - 0.5)\,\beta$;
    - saturation: $x \leftarrow (x - \bar x_{c}) \cdot u\,\sigma + \bar x_{c}$, with $\bar x_{c}$ the per-pixel
      mean over channels (a no-op for $C = 1$);
    - contrast: $x \leftarrow (x - \bar x) (u + \kappa) + \bar x$, with $\bar x$ the mean of the whole image;
    - one geometric op chosen uniformly from ``geometric``, resampled bilinearly with zero padding:
      ``"crop"`` shifts the content by a whole number of pixels, $\mathrm{round}(t\,W)$ with
      $t \sim U[-\rho, \rho]$ (and likewise vertically); ``"scale"`` stretches the content about the centre by
      $s_x, s_y \sim U[1/\gamma, \gamma]$ independently; ``"rotate"`` rotates it about the centre by
      $\alpha \sim U[-\phi, \phi]$ degrees (counter-clockwise as displayed, in pixel units so that it is a true
      rotation on non-square images);
    - cutout: zeroes an $\mathrm{round}(\lambda H) \times \mathrm{round}(\lambda W)$ box centred on a uniformly
      drawn pixel (clipped at the borders).

    Here $u \sim U[0, 1)$ is a fresh draw per op, $\beta$ = ``brightness``, $\sigma$ = ``saturation``,
    $\kappa$ = ``contrast``, $\rho$ = ``crop_ratio``, $\gamma$ = ``scale_ratio``, $\phi$ = ``rotate_degrees``,
    $\lambda$ = ``cutout_ratio``. The defaults are those of DSA/IDC. The module holds no state and augments in
    both training and evaluation mode.

    Args:
        flip: Enable the random horizontal flip.
        color: Enable brightness, saturation and contrast jitter.
        geometric: Geometric ops to choose from, a subset of ``("crop", "scale", "rotate")``; empty for none.
        cutout: Enable cutout.
        crop_ratio: Largest shift $\rho$ of ``"crop"``, as a fraction of the side, in $[0, 1]$.
        scale_ratio: Largest stretch $\gamma \ge 1$ of ``"scale"``.
        rotate_degrees: Largest rotation $\phi$ of ``"rotate"``, in $[0, 180]$ degrees.
        cutout_ratio: Cutout side $\lambda$ as a fraction of the image side, in $[0, 1]$.
        brightness: Brightness range $\beta \ge 0$.
        saturation: Saturation range $\sigma \ge 0$.
        contrast: Contrast offset $\kappa \ge 0$.

    Raises:
        TypeError: If a flag is not a bool, ``geometric`` is not a sequence of strings or a number is not real.
        ValueError: If ``geometric`` names an unknown op or repeats one, or a number is out of range.

    Shape:
        - input: $(B, C, H, W)$, any $C \ge 1$, $H$, $W$.
        - output: $(B, C, H, W)$, same dtype and device.

    Examples:
        >>> aug = DifferentiableAugment()
        >>> real, syn = torch.rand(64, 3, 32, 32), torch.rand(10, 3, 32, 32, requires_grad=True)
        >>> a, b = aug(real, seed=7), aug(syn, seed=7)  # one shared transform for both batches
        >>> b.sum().backward()
        >>> syn.grad.shape
        torch.Size([10, 3, 32, 32])
    """

    def __init__(
        self,
        *,
        flip: bool = True,
        color: bool = True,
        geometric: Sequence[str] = ("crop", "scale", "rotate"),
        cutout: bool = True,
        crop_ratio: float = 0.125,
        scale_ratio: float = 1.2,
        rotate_degrees: float = 15.0,
        cutout_ratio: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
    ) -> None:
        super().__init__()
        self.flip = _check_bool("flip", flip)
        self.color = _check_bool("color", color)
        self.cutout = _check_bool("cutout", cutout)
        if isinstance(geometric, str) or not isinstance(geometric, Sequence):
            raise TypeError(
                f"`geometric` must be a sequence of op names from {GEOMETRIC_OPS}, got {describe(geometric)}"
                + (" (wrap a single name in a tuple)" if isinstance(geometric, str) else "")
            )
        for op in geometric:
            if op not in GEOMETRIC_OPS:
                options = ", ".join(repr(o) for o in GEOMETRIC_OPS)
                raise ValueError(f"`geometric` entries must be one of {options}, got {op!r}")
        if len(set(geometric)) != len(geometric):
            raise ValueError(f"`geometric` must not repeat an op, got {tuple(geometric)!r}")
        self.geometric: tuple[str, ...] = tuple(geometric)
        self.crop_ratio = _check_range("crop_ratio", crop_ratio, 0.0, 1.0)
        self.scale_ratio = check_non_negative_float("scale_ratio", scale_ratio)
        if self.scale_ratio < 1.0:
            raise ValueError(f"`scale_ratio` must be >= 1, got {self.scale_ratio}")
        self.rotate_degrees = _check_range("rotate_degrees", rotate_degrees, 0.0, 180.0)
        self.cutout_ratio = _check_range("cutout_ratio", cutout_ratio, 0.0, 1.0)
        self.brightness = check_non_negative_float("brightness", brightness)
        self.saturation = check_non_negative_float("saturation", saturation)
        self.contrast = check_non_negative_float("contrast", contrast)

    def extra_repr(self) -> str:
        return (
            f"flip={self.flip}, color={self.color}, geometric={self.geometric}, cutout={self.cutout}, "
            f"crop_ratio={self.crop_ratio}, scale_ratio={self.scale_ratio}, rotate_degrees={self.rotate_degrees}, "
            f"cutout_ratio={self.cutout_ratio}, brightness={self.brightness}, saturation={self.saturation}, "
            f"contrast={self.contrast}"
        )

    def sample_params(
        self,
        batch_size: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        shared: bool | None = None,
    ) -> AugmentParams:
        """Draw the augmentation parameters for a batch.

        With ``seed``, the draws come from a private ``torch.Generator`` seeded with ``seed`` (the global RNG is
        neither read nor advanced) and, by default, one draw is shared by the whole batch. Without ``seed``, they
        come from ``generator`` (or the global torch RNG when ``None``) and, by default, every sample gets its own
        draw. ``shared`` overrides the default either way. Twelve uniforms are drawn per draw, in a fixed order
        whatever ops are enabled, so enabling or disabling an op does not change the others' parameters.

        Args:
            batch_size: Number of samples $B \\ge 1$.
            seed: Seed for a private generator (an int >= 0), or ``None``.
            generator: Generator to draw from when ``seed`` is ``None``; its device is used for the draws.
            shared: Whether all samples share one draw; ``None`` means ``seed is not None``.

        Returns:
            The parameters, on the generator's device (CPU unless a device generator was given).

        Raises:
            TypeError: If ``batch_size`` or ``seed`` is not an int, ``generator`` is not a ``torch.Generator`` or
                ``shared`` is not a bool.
            ValueError: If both ``seed`` and ``generator`` are given, ``batch_size`` < 1 or ``seed`` < 0.

        Examples:
            >>> aug = DifferentiableAugment()
            >>> p4, p40 = aug.sample_params(4, seed=0), aug.sample_params(40, seed=0)
            >>> bool((p4.angle == p40.angle[0]).all())
            True
        """
        batch_size = check_positive_int("batch_size", batch_size)
        gen = _resolve_generator(seed, generator)
        if shared is None:
            shared = seed is not None
        shared = _check_bool("shared", shared)
        draws = 1 if shared else batch_size
        u = _rand(gen, draws, _NUM_DRAWS)

        flip = u[:, 0] < 0.5 if self.flip else torch.zeros(draws, dtype=torch.bool, device=u.device)
        if self.color:
            brightness = (u[:, 1] - 0.5) * self.brightness
            saturation = u[:, 2] * self.saturation
            contrast = u[:, 3] + self.contrast
        else:
            brightness, saturation, contrast = torch.zeros_like(u[:, 1]), torch.ones_like(u[:, 2]), u.new_ones(draws)

        if self.geometric:
            codes = torch.tensor([GEOMETRIC_OPS.index(op) for op in self.geometric], device=u.device)
            choice = torch.clamp((u[:, 4] * len(self.geometric)).long(), max=len(self.geometric) - 1)
            geometric = codes[choice]
        else:
            geometric = torch.full((draws,), -1, dtype=torch.long, device=u.device)
        is_crop = (geometric == GEOMETRIC_OPS.index("crop")).unsqueeze(-1)
        is_scale = (geometric == GEOMETRIC_OPS.index("scale")).unsqueeze(-1)
        is_rotate = geometric == GEOMETRIC_OPS.index("rotate")
        translation = torch.where(is_crop, (2.0 * u[:, 5:7] - 1.0) * self.crop_ratio, 0.0)
        low = 1.0 / self.scale_ratio
        scale = torch.where(is_scale, low + u[:, 7:9] * (self.scale_ratio - low), 1.0)
        angle = torch.where(is_rotate, (2.0 * u[:, 9] - 1.0) * self.rotate_degrees, 0.0)

        cutout_center = u[:, 10:12].clone()
        cutout_size = torch.full_like(u[:, 0], self.cutout_ratio if self.cutout else 0.0)

        def f32(t: Tensor) -> Tensor:
            return t.to(torch.float32)

        params = AugmentParams(
            flip=flip,
            brightness=f32(brightness),
            saturation=f32(saturation),
            contrast=f32(contrast),
            geometric=geometric,
            translation=f32(translation),
            scale=f32(scale),
            angle=f32(angle),
            cutout_center=f32(cutout_center),
            cutout_size=f32(cutout_size),
        )
        return params.expand(batch_size)

    def forward(
        self,
        x: Tensor,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        params: AugmentParams | None = None,
    ) -> Tensor:
        """Augment a batch of images.

        Args:
            x: Images, floating point, any channel count and size.
            seed: Draw one shared set of parameters from a private generator seeded with ``seed`` (see
                [`sample_params`][hmdc_modules.condensation.augment.DifferentiableAugment.sample_params]).
            generator: Draw per-sample parameters from this generator (global RNG when ``None`` and no ``seed``).
            params: Apply these parameters instead of drawing (batch size 1, broadcast, or $B$). Exclusive with
                ``seed`` and ``generator``.

        Returns:
            The augmented images, same shape, dtype and device as ``x``; differentiable with respect to ``x``.

        Raises:
            TypeError: If ``x`` is not a floating-point tensor or ``params`` is not an ``AugmentParams``.
            ValueError: If ``x`` is not 4-D or empty, ``params`` does not match the batch, or ``params`` is given
                together with ``seed`` or ``generator``.

        Shape:
            - x: $(B, C, H, W)$
            - output: $(B, C, H, W)$
        """
        check_tensor("x", x, ndim=4, floating=True, nonempty=True)
        if params is None:
            params = self.sample_params(x.shape[0], seed=seed, generator=generator)
        else:
            if seed is not None or generator is not None:
                raise ValueError("`params` cannot be combined with `seed` or `generator`; pass only one of them")
            params = _check_params(params)
        return _apply(x, params)


def _sample_gamma(shape: float, generator: torch.Generator | None) -> float:
    """One Gamma(shape, 1) draw (Marsaglia and Tsang), using only ``generator``."""
    boost = 1.0
    if shape < 1.0:
        boost = float(_rand(generator, 1).item()) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    device = generator.device if generator is not None else torch.device("cpu")
    while True:
        z = float(torch.randn(1, generator=generator, device=device, dtype=torch.float64).item())
        v = (1.0 + c * z) ** 3
        if v <= 0.0:
            continue
        u = float(_rand(generator, 1).item())
        if math.log(max(u, 1e-300)) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v * boost


def _sample_beta(beta: float, generator: torch.Generator | None) -> float:
    """One Beta(beta, beta) draw; exactly ``U[0, 1)`` for ``beta == 1``."""
    if beta == 1.0:
        return float(_rand(generator, 1).item())
    a, b = _sample_gamma(beta, generator), _sample_gamma(beta, generator)
    return a / (a + b) if a + b > 0.0 else 0.5


def _soft_targets(x: Tensor, target: Any, num_classes: int) -> Tensor:
    check_tensor("target", target, ndim=(1, 2))
    check_same_batch(("x", "target"), x, target)
    if target.ndim == 1:
        if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
            raise TypeError(f"1-D `target` must hold integer class indices, got dtype {target.dtype}")
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
            raise ValueError(
                f"`target` class indices must be in [0, {num_classes}), got values in "
                f"[{int(target.min())}, {int(target.max())}]"
            )
        return F.one_hot(target.long(), num_classes).to(x.dtype)
    if not target.is_floating_point():
        raise TypeError(f"2-D `target` must hold floating-point soft labels, got dtype {target.dtype}")
    if target.shape[1] != num_classes:
        raise ValueError(
            f"2-D `target` must have shape (B, num_classes={num_classes}), got shape {tuple(target.shape)}"
        )
    return target


def cutmix(
    x: Tensor,
    target: Tensor,
    num_classes: int,
    *,
    p: float = 0.5,
    beta: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""CutMix: paste a box of a partner image into each image and mix the targets by the pasted area.

    With probability $p$ (one draw for the batch): draw $\lambda \sim \mathrm{Beta}(\beta, \beta)$, a box of
    side $\mathrm{round}(H\sqrt{1 - \lambda}) \times \mathrm{round}(W\sqrt{1 - \lambda})$ centred on a uniformly
    drawn pixel and clipped to the image (one box for the whole batch), and a random permutation $\pi$ of the batch.
    Then, with $a$ the clipped box's pixel count and $\lambda' = 1 - a / (HW)$ the fraction actually kept,

    $$\tilde x_i = M \odot x_{\pi(i)} + (1 - M) \odot x_i, \qquad \tilde y_i = \lambda' y_i + (1 - \lambda')\,
    y_{\pi(i)},$$

    where $M$ is the box mask and $y$ the soft (one-hot for class indices) targets. Otherwise the images are
    returned unchanged and the targets as soft targets.

    Random draws, in order: apply-or-not, $\lambda$, the box centre, $\pi$; all from ``generator`` (global torch
    RNG when ``None``), on the generator's device.

    Args:
        x: Images, floating point.
        target: Class indices (integer dtype) or soft targets (floating point).
        num_classes: Number of classes $K \ge 1$.
        p: Probability of mixing, in $[0, 1]$.
        beta: Parameter $\beta > 0$ of the symmetric Beta distribution of $\lambda$ (1: uniform).
        generator: Source of randomness, or ``None`` for the global torch RNG.

    Returns:
        ``(mixed_images, soft_targets)``: images like ``x`` (differentiable with respect to ``x``) and targets of
        shape $(B, K)$ that sum to the sum of the input targets' rows (1 for one-hot). One-hot targets are built in
        ``x``'s dtype; soft targets keep their dtype.

    Raises:
        TypeError: If ``x`` is not a floating-point tensor, ``target`` has the wrong dtype for its rank,
            ``num_classes`` is not an int or ``generator`` is not a ``torch.Generator``.
        ValueError: If ``x`` is not 4-D or empty, ``target`` is not $(B)$ or $(B, K)$ with matching batch and $K$,
            a class index is out of range, ``num_classes`` < 1, ``p`` is outside $[0, 1]$ or ``beta`` <= 0.

    Shape:
        - x: $(B, C, H, W)$
        - target: $(B)$ or $(B, K)$
        - output: $(B, C, H, W)$ and $(B, K)$

    Examples:
        >>> x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
        >>> mixed, soft = cutmix(x, y, 10, p=1.0, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(soft.sum(1), torch.ones(8))
        True
    """
    check_tensor("x", x, ndim=4, floating=True, nonempty=True)
    num_classes = check_positive_int("num_classes", num_classes)
    p = _check_range("p", p, 0.0, 1.0)
    beta = check_non_negative_float("beta", beta)
    if beta <= 0.0:
        raise ValueError(f"`beta` must be > 0, got {beta}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {describe(generator)}")
    batch, _, height, width = x.shape
    soft = _soft_targets(x, target, num_classes)
    soft = soft.to(x.device)

    if not float(_rand(generator, 1).item()) < p:
        return x, soft
    lam = _sample_beta(beta, generator)
    cut = math.sqrt(max(0.0, 1.0 - lam))
    box_h, box_w = math.floor(height * cut + 0.5), math.floor(width * cut + 0.5)
    centre = _rand(generator, 2)
    cy = min(math.floor(float(centre[0]) * height), height - 1)
    cx = min(math.floor(float(centre[1]) * width), width - 1)
    y0, x0 = max(cy - box_h // 2, 0), max(cx - box_w // 2, 0)
    y1, x1 = min(cy - box_h // 2 + box_h, height), min(cx - box_w // 2 + box_w, width)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(batch, generator=generator, device=gen_device).to(x.device)

    area = max(0, y1 - y0) * max(0, x1 - x0)
    if area == 0:
        return x, soft
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    mask = ((rows >= y0) & (rows < y1)).unsqueeze(-1) & ((cols >= x0) & (cols < x1)).unsqueeze(0)
    mixed = torch.where(mask, x[perm], x)
    kept = 1.0 - area / (height * width)
    return mixed, kept * soft + (1.0 - kept) * soft[perm]


class CutMix(nn.Module):
    """Module form of [`cutmix`][hmdc_modules.condensation.augment.cutmix] with fixed ``num_classes``, ``p`` and
    ``beta``.

    Mixes in both training and evaluation mode (it holds no state).

    Args:
        num_classes: Number of classes $K \\ge 1$.
        p: Probability of mixing a batch, in $[0, 1]$.
        beta: Parameter $\\beta > 0$ of the Beta distribution of the kept fraction.

    Raises:
        TypeError: If ``num_classes`` is not an int or ``p``/``beta`` is not a real number.
        ValueError: If ``num_classes`` < 1, ``p`` is outside $[0, 1]$ or ``beta`` <= 0.

    Shape:
        - x: $(B, C, H, W)$; target: $(B)$ or $(B, K)$
        - output: $(B, C, H, W)$ and $(B, K)$

    Examples:
        >>> mix = CutMix(10, p=1.0)
        >>> images, soft = mix(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
        >>> soft.shape
        torch.Size([4, 10])
    """

    def __init__(self, num_classes: int, *, p: float = 0.5, beta: float = 1.0) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.p = _check_range("p", p, 0.0, 1.0)
        self.beta = check_non_negative_float("beta", beta)
        if self.beta <= 0.0:
            raise ValueError(f"`beta` must be > 0, got {self.beta}")

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, p={self.p}, beta={self.beta}"

    def forward(self, x: Tensor, target: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Apply [`cutmix`][hmdc_modules.condensation.augment.cutmix] to a batch; see there for arguments and errors."""
        return cutmix(x, target, self.num_classes, p=self.p, beta=self.beta, generator=generator)

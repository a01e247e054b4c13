r"""The evaluation's training augmentations, and the learning-rate schedules and optimiser of a cell.

Three augmentation modes ([`AUGMENT_MODES`][hmdc_modules.evaluation.augmentation.AUGMENT_MODES]):

- ``"idc"``: [`DifferentiableAugment`][hmdc_modules.condensation.augment.DifferentiableAugment] with its defaults,
  one independent draw per image: flip, colour, one geometric op and cutout, all applied to every image (the IDC
  variant of DSA, which the HMDC authors' evaluation uses).
- ``"dsa"``: [`OneOpAugment`][hmdc_modules.evaluation.augmentation.OneOpAugment], DSA's single-op mode
  (``ParamDiffAug.aug_mode = 'S'`` in DC/DSA, DM and MTT; ``DSA(aug_mode='S')`` in DD-Ranking): one op, drawn
  uniformly from ``color, crop, cutout, flip, scale, rotate``, for the whole batch, with per-image parameters.
- ``"none"``: no augmentation.

The learning-rate schedules ([`LR_SCHEDULES`][hmdc_modules.evaluation.augmentation.LR_SCHEDULES]) are
``"constant"`` (HMDC), ``"half"`` (DC/DSA/DM/MTT: the rate times ``lr_decay`` from epoch $E/2$ on, the momentum
restarted there because those codes build a new optimiser) and ``"step:N"`` (``torch.optim.lr_scheduler.StepLR``
with ``step_size=N`` stepped once per epoch, as DD-Ranking does: the rate times ``lr_decay`` every $N$ epochs).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from hmdc_modules._validation import check_non_negative_float, check_positive_int, check_tensor, describe

__all__ = [
    "AUGMENT_MODES",
    "DSA_OPS",
    "LR_SCHEDULES",
    "OneOpAugment",
    "build_augment",
    "build_optimizer",
    "check_lr_schedule",
    "learning_rate_at",
    "restarts_momentum_at",
]

AUGMENT_MODES: tuple[str, ...] = ("idc", "dsa", "none")
"""The training augmentation modes: every op on every image (IDC), one op per batch (DSA), none."""

LR_SCHEDULES: tuple[str, ...] = ("constant", "half", "step:N")
"""The learning-rate schedules; ``N`` in ``"step:N"`` is a whole number of epochs >= 1."""

DSA_OPS: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
"""The ops of DSA's ``color_crop_cutout_flip_scale_rotate`` strategy, one of which a DSA-mode batch gets."""

_STEP = re.compile(r"step:([1-9][0-9]*)")


def check_lr_schedule(schedule: Any) -> str:
    """``schedule`` if it names a learning-rate schedule, else one clear error.

    Raises:
        TypeError: If ``schedule`` is not a string.
        ValueError: If it is not ``"constant"``, ``"half"`` or ``"step:N"`` with a whole ``N`` >= 1.

    Examples:
        >>> check_lr_schedule("step:500")
        'step:500'
    """
    if not isinstance(schedule, str):
        raise TypeError(f"`lr_schedule` must be a str, got {describe(schedule)}")
    if schedule in ("constant", "half") or _STEP.fullmatch(schedule):
        return schedule
    raise ValueError(f"`lr_schedule` must be 'constant', 'half' or 'step:N' with a whole N >= 1, got {schedule!r}")


def learning_rate_at(schedule: str, base_lr: float, epoch: int, epochs: int, decay: float = 0.1) -> float:
    """The learning rate of the (0-based) ``epoch`` of an ``epochs``-long training.

    Args:
        schedule: ``"constant"``, ``"half"`` or ``"step:N"`` (see the module's text).
        base_lr: The rate of the first epoch.
        epoch: The epoch, 0-based.
        epochs: The training's length $E$ (``"half"`` decays from epoch ``E // 2`` on).
        decay: The factor of each decay.

    Returns:
        The rate.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the schedule is unknown or a number is out of range.

    Examples:
        >>> [learning_rate_at("half", 0.01, e, 1000) for e in (0, 499, 500)]
        [0.01, 0.01, 0.001]
        >>> [round(learning_rate_at("step:2", 1.0, e, 6), 6) for e in range(6)]
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    """
    schedule = check_lr_schedule(schedule)
    base_lr = check_non_negative_float("base_lr", base_lr)
    epoch = check_positive_int("epoch", epoch, minimum=0)
    epochs = check_positive_int("epochs", epochs)
    decay = check_non_negative_float("decay", decay)
    if schedule == "constant":
        return base_lr
    if schedule == "half":
        return base_lr * decay if epoch >= epochs // 2 else base_lr
    match = _STEP.fullmatch(schedule)
    assert match is not None  # checked above
    return base_lr * decay ** (epoch // int(match.group(1)))


def restarts_momentum_at(schedule: str, epoch: int, epochs: int) -> bool:
    """Whether the optimiser's momentum restarts before ``epoch`` (``"half"`` at ``E // 2``, as DC/DSA build a new
    optimiser there; never for the other schedules).

    Examples:
        >>> restarts_momentum_at("half", 500, 1000), restarts_momentum_at("step:500", 500, 1000)
        (True, False)
    """
    return check_lr_schedule(schedule) == "half" and epoch == epochs // 2 and epoch > 0


def build_optimizer(parameters: Any, lr: float, *, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """The optimiser every protocol trains with: SGD (no Nesterov) with momentum and weight decay.

    Examples:
        >>> opt = build_optimizer(nn.Linear(2, 2).parameters(), 0.01, momentum=0.9, weight_decay=5e-4)
        >>> opt.defaults["momentum"], opt.defaults["weight_decay"], opt.defaults["nesterov"]
        (0.9, 0.0005, False)
    """
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)


class OneOpAugment(nn.Module):
    r"""DSA's single-op mode: one op per batch, drawn uniformly from ``ops``, with its parameters drawn per image.

    The parameters follow DSA's ``ParamDiffAug`` defaults (as DD-Ranking's demo configurations repeat them):

    - ``color``: brightness $+ (u - 0.5)\cdot 1.0$, then saturation $\times 2u$, then contrast $\times (u + 0.5)$;
    - ``crop``: an integer shift drawn uniformly from $\{-s, \ldots, s\}$ pixels on each axis,
      $s = \lfloor 0.125\,H + 0.5 \rfloor$ (4 at 32 px), zero padding;
    - ``cutout``: a zeroed square of side $\mathrm{round}(0.5\,H)$ centred on a uniformly drawn pixel;
    - ``flip``: a horizontal flip with probability 0.5;
    - ``scale``: DSA samples the grid at $s_x, s_y \sim U[1/1.2, 1.2]$, so the content is stretched by
      $1/s_x, 1/s_y$;
    - ``rotate``: an angle drawn from $U[-15°, 15°]$.

    The parameters are applied by [`DifferentiableAugment`][hmdc_modules.condensation.augment.DifferentiableAugment]
    (``params=``), so the image operations are the kit's: bilinear resampling with ``align_corners=False`` where DSA
    uses ``align_corners=True`` (a sub-pixel difference), and a cutout centre that cannot fall one pixel past the
    border as DSA's can.

    Args:
        ops: The ops to draw from, a non-empty subset of [`DSA_OPS`][hmdc_modules.evaluation.augmentation.DSA_OPS].

    Raises:
        TypeError: If ``ops`` is not a tuple or list of strings.
        ValueError: If it is empty, repeats an op or names an unknown one.

    Examples:
        >>> aug = OneOpAugment()
        >>> op, params = aug.sample(4, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> op in DSA_OPS, params.batch_size
        (True, 4)
        >>> aug(torch.rand(4, 3, 32, 32), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, ops: tuple[str, ...] | list[str] = DSA_OPS) -> None:
        super().__init__()
        from hmdc_modules.condensation import DifferentiableAugment

        if not isinstance(ops, tuple | list) or not all(isinstance(op, str) for op in ops):
            raise TypeError(f"`ops` must be a tuple of op names from {DSA_OPS}, got {describe(ops)}")
        unknown = [op for op in ops if op not in DSA_OPS]
        if not ops or unknown or len(set(ops)) != len(ops):
            raise ValueError(f"`ops` must be distinct names from {DSA_OPS}, got {tuple(ops)!r}")
        self.ops = tuple(ops)
        self.apply_params = DifferentiableAugment()

    def extra_repr(self) -> str:
        return f"ops={self.ops}"

    def sample(
        self, batch_size: int, height: int, width: int, *, generator: torch.Generator | None = None
    ) -> tuple[str, Any]:
        """Draw the op of a batch and every image's parameters for it.

        Draws, in order, from ``generator`` (the global RNG when ``None``), on the CPU in float64: the op (one
        uniform), then 4 uniforms per image.

        Returns:
            ``(op, params)``: the op's name and an
            [`AugmentParams`][hmdc_modules.condensation.augment.AugmentParams] of ``batch_size`` images that is the
            identity in every field the op does not use.
        """
        from hmdc_modules.condensation import AugmentParams
        from hmdc_modules.condensation.augment import GEOMETRIC_OPS

        batch_size = check_positive_int("batch_size", batch_size)
        height, width = check_positive_int("height", height), check_positive_int("width", width)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator or None, got {describe(generator)}")

        def draw(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator, dtype=torch.float64)

        op = self.ops[min(int(draw(1).item() * len(self.ops)), len(self.ops) - 1)]
        u = draw(batch_size, 4)
        b = batch_size
        flip = torch.zeros(b, dtype=torch.bool)
        brightness, saturation, contrast = torch.zeros(b), torch.ones(b), torch.ones(b)
        geometric = torch.full((b,), -1, dtype=torch.long)
        translation, scale, angle = torch.zeros(b, 2), torch.ones(b, 2), torch.zeros(b)
        cutout_center, cutout_size = torch.zeros(b, 2), torch.zeros(b)
        if op == "color":
            brightness = ((u[:, 0] - 0.5) * 1.0).float()
            saturation = (u[:, 1] * 2.0).float()
            contrast = (u[:, 2] + 0.5).float()
        elif op == "flip":
            flip = u[:, 0] < 0.5
        elif op == "cutout":
            cutout_center, cutout_size = u[:, 0:2].float(), torch.full((b,), 0.5)
        elif op == "crop":
            sides = torch.tensor([width, height], dtype=torch.float64)
            reach = torch.floor(sides * 0.125 + 0.5)  # DSA's int(side * ratio + 0.5)
            shift = torch.clamp(torch.floor(u[:, 0:2] * (2 * reach + 1)), max=2 * reach) - reach
            translation, geometric = (shift / sides).float(), torch.full((b,), GEOMETRIC_OPS.index("crop"))
        elif op == "scale":
            ratio = 1.2
            sampled = u[:, 0:2] * (ratio - 1.0 / ratio) + 1.0 / ratio
            scale, geometric = (1.0 / sampled).float(), torch.full((b,), GEOMETRIC_OPS.index("scale"))
        else:  # rotate
            angle, geometric = ((u[:, 0] - 0.5) * 2.0 * 15.0).float(), torch.full((b,), GEOMETRIC_OPS.index("rotate"))
        params = AugmentParams(
            flip=flip,
            brightness=brightness,
            saturation=saturation,
            contrast=contrast,
            geometric=geometric,
            translation=translation,
            scale=scale,
            angle=angle,
            cutout_center=cutout_center,
            cutout_size=cutout_size,
        )
        return op, params

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch with one drawn op (see
        [`sample`][hmdc_modules.evaluation.augmentation.OneOpAugment.sample]).

        Shape:
            - x: $(B, C, H, W)$, floating point; output: the same.
        """
        check_tensor("x", x, ndim=4, floating=True, nonempty=True)
        _, params = self.sample(x.shape[0], x.shape[-2], x.shape[-1], generator=generator)
        return self.apply_params(x, params=params.to(x.device))


def build_augment(mode: str) -> nn.Module | None:
    """The training augmentation of a mode: ``"idc"``, ``"dsa"`` or ``"none"`` (``None``).

    Raises:
        ValueError: If ``mode`` is not one of [`AUGMENT_MODES`][hmdc_modules.evaluation.augmentation.AUGMENT_MODES].

    Examples:
        >>> type(build_augment("dsa")).__name__, build_augment("none")
        ('OneOpAugment', None)
    """
    from hmdc_modules.condensation import DifferentiableAugment

    if mode not in AUGMENT_MODES:
        raise ValueError(f"`augment` must be one of {AUGMENT_MODES}, got {mode!r}")
    if mode == "idc":
        return DifferentiableAugment()
    return OneOpAugment() if mode == "dsa" else None

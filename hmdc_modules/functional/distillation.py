"""Mutual-distillation feature distance $D_{MD}$ (functional form).

HMDC compares the aligned spatial-semantic features of two heterogeneous models with a plain element-wise
distance, by default the mean squared error over every element of the two ``[B, L, 1 + s^2, d]`` tensors
(semantic and spatial tokens weighted equally per element). The distance is symmetric and no side is detached:
both models (and both sets of projections) receive its gradient, which is what makes the distillation *mutual*.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor

from hmdc_modules._validation import check_all_finite, check_choice, check_non_negative_float, check_tensor
from hmdc_modules.functional.matching import REDUCTIONS

__all__ = ["FEATURE_DISTANCES", "mutual_distillation_loss"]

FEATURE_DISTANCES: tuple[str, ...] = ("mse", "l1", "smooth_l1")
"""Element-wise feature distances accepted by ``distance=`` of
[`mutual_distillation_loss`][hmdc_modules.functional.distillation.mutual_distillation_loss] (the distances between
gradients are [`GRADIENT_DISTANCES`][hmdc_modules.functional.matching.GRADIENT_DISTANCES]); the reductions are
[`REDUCTIONS`][hmdc_modules.functional.matching.REDUCTIONS]."""


def __getattr__(name: str) -> Any:
    """Deprecated alias: ``DISTANCES`` is now ``FEATURE_DISTANCES``."""
    if name == "DISTANCES":
        warnings.warn(
            "hmdc_modules.functional.distillation.DISTANCES is now FEATURE_DISTANCES; the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return FEATURE_DISTANCES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_pair(names: tuple[str, str], input: Tensor, target: Tensor) -> None:
    """Check that two feature tensors are floating, non-empty, of identical shape and finite."""
    check_tensor(names[0], input, floating=True)
    check_tensor(names[1], target, floating=True)
    if input.shape != target.shape:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have identical shapes, got {tuple(input.shape)} "
            f"and {tuple(target.shape)}"
        )
    if input.numel() == 0:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must hold at least one element, got shape {tuple(input.shape)}"
        )
    check_all_finite([(names[0], input), (names[1], target)])


def _distance(input: Tensor, target: Tensor, reduction: str, distance: str, beta: float) -> Tensor:
    """Dispatch to the element-wise distance (arguments already validated)."""
    if distance == "mse":
        return F.mse_loss(input, target, reduction=reduction)
    if distance == "l1":
        return F.l1_loss(input, target, reduction=reduction)
    return F.smooth_l1_loss(input, target, reduction=reduction, beta=beta)


def mutual_distillation_loss(
    input: Tensor,
    target: Tensor,
    reduction: Literal["mean", "sum", "none"] = "mean",
    distance: Literal["mse", "l1", "smooth_l1"] = "mse",
    *,
    beta: float = 1.0,
) -> Tensor:
    r"""Mutual-distillation distance $D_{MD}$ between two aligned feature tensors.

    With $\delta = x - y$ taken element-wise over the $n$ elements of the two tensors, the element-wise term is

    - ``"mse"`` (default, the reference): $\ell_k = \delta_k^2$;
    - ``"l1"``: $\ell_k = |\delta_k|$;
    - ``"smooth_l1"``: $\ell_k = \tfrac{1}{2}\delta_k^2/\beta$ if $|\delta_k| < \beta$, else
      $\ell_k = |\delta_k| - \tfrac{1}{2}\beta$ (plain L1 when $\beta = 0$);

    and ``reduction="mean"`` returns $\frac{1}{n}\sum_k \ell_k$, ``"sum"`` returns $\sum_k \ell_k$, ``"none"``
    returns the element-wise $\ell$. Every element weighs the same, so for decomposer outputs of shape
    $(B, L, 1 + s^2, d)$ the semantic token is $1/(1 + s^2)$ of the loss. All three distances are symmetric in
    ``input`` and ``target`` and neither side is detached: both receive gradient.

    Args:
        input: Aligned features of one model, e.g. the first tensor of a
            [`SpatialSemanticDecomposer`][hmdc_modules.decomposition.SpatialSemanticDecomposer] pair.
        target: Aligned features of the other model; same shape as ``input``. Not treated as a constant.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        distance: ``"mse"``, ``"l1"`` or ``"smooth_l1"``.
        beta: Threshold of the ``"smooth_l1"`` distance (ignored by the others); must be $\ge 0$.

    Returns:
        A scalar for ``"mean"``/``"sum"``; the element-wise loss, shaped like ``input``, for ``"none"``. Device and
        dtype follow the inputs.

    Raises:
        TypeError: If ``input`` or ``target`` is not a floating-point tensor, or ``beta`` is not a number.
        ValueError: If the shapes differ (both shapes are reported), the tensors are empty or hold NaN or
            infinity (the message names which), or ``reduction``, ``distance`` or ``beta`` is not an accepted
            value.

    Shape:
        - input: $(*)$, any shape.
        - target: $(*)$, the same shape as ``input``.
        - output: $()$ for ``"mean"`` and ``"sum"``, $(*)$ for ``"none"``.

    Examples:
        >>> import torch
        >>> a, b = torch.zeros(2, 4, 17, 8), torch.ones(2, 4, 17, 8)
        >>> mutual_distillation_loss(a, b)
        tensor(1.)
        >>> mutual_distillation_loss(a, 3 * b, reduction="sum", distance="l1")
        tensor(3264.)
    """
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("distance", distance, FEATURE_DISTANCES)
    beta = check_non_negative_float("beta", beta)
    _check_pair(("input", "target"), input, target)
    return _distance(input, target, reduction, distance, beta)

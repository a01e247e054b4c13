"""Mutual-distillation loss $D_{MD}$ as an ``nn.Module``.

See [`mutual_distillation_loss`][hmdc_modules.functional.distillation.mutual_distillation_loss] for the functional
form. The module additionally accepts the list of aligned pairs returned by
[`SpatialSemanticDecomposer`][hmdc_modules.decomposition.SpatialSemanticDecomposer] and sums the per-pair losses,
which is how $N > 2$ models are distilled mutually.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from hmdc_modules._validation import check_choice, check_non_negative_float, describe
from hmdc_modules.functional.distillation import FEATURE_DISTANCES, _check_pair, _distance
from hmdc_modules.functional.matching import REDUCTIONS

__all__ = ["MutualDistillationLoss"]


class MutualDistillationLoss(nn.Module):
    r"""Mutual-distillation distance $D_{MD}$ between aligned features of two (or more) models.

    For two tensors $x, y$ of identical shape with $n$ elements, the default (the reference) is the mean squared
    error over every element,

    $$D_{MD}(x, y) = \frac{1}{n} \sum_k (x_k - y_k)^2,$$

    with ``"l1"`` and ``"smooth_l1"`` as alternative element-wise distances and ``"sum"``/``"none"`` as alternative
    reductions (see [`mutual_distillation_loss`][hmdc_modules.functional.distillation.mutual_distillation_loss]).
    The loss is symmetric and neither side is detached, so both models receive its gradient.

    ``forward`` takes either two tensors, or one sequence of ``(a, b)`` pairs (the output of
    [`SpatialSemanticDecomposer`][hmdc_modules.decomposition.SpatialSemanticDecomposer]); for pairs the result is
    $\sum_p D_{MD}(a_p, b_p)$, each pair reduced on its own (so with ``"mean"`` every pair weighs the same whatever
    its size). With ``reduction="none"`` and pairs, nothing is summed: a tuple holding each pair's element-wise
    loss is returned, because the pairs' shapes may differ.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        distance: ``"mse"`` (default), ``"l1"`` or ``"smooth_l1"``.
        beta: Threshold of the ``"smooth_l1"`` distance (ignored by the others); must be $\ge 0$.

    Raises:
        TypeError: If ``beta`` is not a number.
        ValueError: If ``reduction``, ``distance`` or ``beta`` is not an accepted value.

    Shape:
        - input: $(*)$, or a sequence of pairs of tensors, each pair of one shape $(*_p)$.
        - target: $(*)$, the same shape as ``input``; ``None`` when ``input`` is a sequence of pairs.
        - output: $()$ for ``"mean"``/``"sum"``; $(*)$ for ``"none"`` with two tensors, a tuple of $(*_p)$ with
          pairs.

    Examples:
        >>> import torch
        >>> loss = MutualDistillationLoss()
        >>> a = torch.randn(2, 4, 17, 8, requires_grad=True)
        >>> b = torch.randn(2, 4, 17, 8, requires_grad=True)
        >>> value = loss(a, b)
        >>> value.backward()
        >>> bool(torch.allclose(a.grad, -b.grad))
        True
        >>> loss([(a, a), (b, b)]).item()
        0.0
    """

    def __init__(
        self,
        reduction: Literal["mean", "sum", "none"] = "mean",
        distance: Literal["mse", "l1", "smooth_l1"] = "mse",
        *,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.reduction: str = check_choice("reduction", reduction, REDUCTIONS)
        self.distance: str = check_choice("distance", distance, FEATURE_DISTANCES)
        self.beta: float = check_non_negative_float("beta", beta)

    def forward(
        self, input: Tensor | Sequence[tuple[Tensor, Tensor]], target: Tensor | None = None
    ) -> Tensor | tuple[Tensor, ...]:
        """Compute $D_{MD}$ for two tensors, or the sum over a sequence of aligned pairs.

        Args:
            input: Features of one model, or a non-empty sequence of ``(a, b)`` pairs of aligned features.
            target: Features of the other model, same shape as ``input``; must be ``None`` when ``input`` is a
                sequence of pairs.

        Returns:
            The loss: a scalar for ``"mean"``/``"sum"``; for ``"none"`` the element-wise loss (two tensors) or a
            tuple of per-pair element-wise losses (pairs).

        Raises:
            TypeError: If ``input`` is a tensor and ``target`` is missing, ``input`` is a sequence and ``target`` is
                given, a pair is not a 2-sequence, or a tensor is not floating-point.
            ValueError: If the two tensors (or the two tensors of a pair) have different shapes, are empty or hold
                NaN or infinity (the message names which), or the sequence of pairs is empty or an item does not
                hold exactly two tensors.
        """
        if isinstance(input, Tensor):
            if target is None:
                raise TypeError("`target` must be a torch.Tensor when `input` is a tensor, got None")
            _check_pair(("input", "target"), input, target)
            return _distance(input, target, self.reduction, self.distance, self.beta)
        if target is not None:
            if isinstance(input, str | bytes) or not isinstance(input, Sequence):
                raise TypeError(f"`input` must be a torch.Tensor like `target`, got {describe(input)}")
            raise TypeError(f"`target` must be None when `input` is a sequence of (a, b) pairs, got {describe(target)}")
        if isinstance(input, str | bytes) or not isinstance(input, Sequence):
            raise TypeError(
                f"`input` must be a torch.Tensor or a sequence of (a, b) tensor pairs, got {describe(input)}"
            )
        if len(input) == 0:
            raise ValueError("`input` must hold at least one (a, b) pair, got an empty sequence")
        losses: list[Tensor] = []
        for k, pair in enumerate(input):
            if isinstance(pair, Tensor | str | bytes) or not isinstance(pair, Sequence):
                raise TypeError(f"`input[{k}]` must be an (a, b) pair of tensors, got {describe(pair)}")
            if len(pair) != 2:
                raise ValueError(f"`input[{k}]` must hold exactly 2 tensors (a, b), got {len(pair)} items")
            a, b = pair
            _check_pair((f"input[{k}][0]", f"input[{k}][1]"), a, b)
            losses.append(_distance(a, b, self.reduction, self.distance, self.beta))
        if self.reduction == "none":
            return tuple(losses)
        total = losses[0]
        for value in losses[1:]:
            total = total + value
        return total

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``."""
        text = f"reduction={self.reduction!r}, distance={self.distance!r}"
        if self.distance == "smooth_l1":
            text += f", beta={self.beta}"
        return text

r"""The per-class HMDC image objective: gradient matching through every model, matched distillation, balancing.

For one class $c$ with a real batch $(x^r, t^r)$ and a synthetic batch $(x^s, t^s)$ (already augmented, soft
targets), every model $m$ runs **once** on each batch through its adapter; the same outputs serve both terms:

- $L_{GM,m} = D(\nabla_{\theta_m} CE(f_m(x^r), t^r),\ \nabla_{\theta_m} CE(f_m(x^s), t^s))$, one per model
  ([`HeterogeneousGradientMatcher`][hmdc_modules.matching.HeterogeneousGradientMatcher]);
- $L_{MD} = D(\nabla_{\theta} D_{MD}(x^r),\ \nabla_{\theta} D_{MD}(x^s))$ over the parameters of all models, where
  $D_{MD}$ is the [`MutualDistillationLoss`][hmdc_modules.distillation.MutualDistillationLoss] of the
  [`SpatialSemanticDecomposer`][hmdc_modules.decomposition.SpatialSemanticDecomposer]'s aligned tokens (the
  reference's use of distillation in the image objective: matching of its parameter gradients).

The image loss is $L^c = \sum_k w_{c,k} L_k$ with the [`GradientBalancer`][hmdc_modules.balancer.GradientBalancer]'s
weights for group $c$ (all ones without a balancer).
[`HMDCObjective.backward`][hmdc_modules.objective.HMDCObjective.backward] writes $\partial L^c / \partial S$ into
the stored images' ``.grad`` and nothing else; on the balancer's sampling calls it reuses the per-loss gradients it
measured instead of a second backward pass.

[`hmdc_losses`][hmdc_modules.objective.hmdc_losses] is the functional form of the unweighted losses.

Examples:
    >>> import torch
    >>> from hmdc_modules import CNNAdapter, GradientBalancer, SpatialSemanticDecomposer
    >>> from hmdc_modules.condensation import ConvNet
    >>> adapters = [CNNAdapter(ConvNet(num_classes=2, width=8)), CNNAdapter(ConvNet(num_classes=2, width=4))]
    >>> objective = HMDCObjective(
    ...     adapters,
    ...     decomposer=SpatialSemanticDecomposer(adapters, image_size=32),
    ...     balancer=GradientBalancer(3, num_groups=2),
    ...     model_names=["a", "b"],
    ... )
    >>> objective.loss_names
    ('gm_a', 'gm_b', 'md')
    >>> images = torch.randn(2, 3, 32, 32, requires_grad=True)  # the stored synthetic images of class 1
    >>> real_t = torch.nn.functional.one_hot(torch.ones(6, dtype=torch.long), 2).float()
    >>> syn_t = torch.nn.functional.one_hot(torch.ones(2, dtype=torch.long), 2).float()
    >>> step = objective.step(torch.randn(6, 3, 32, 32), real_t, images * 1.0, syn_t, images, group=1)
    >>> len(step.losses), max(step.weights), images.grad.shape
    (3, 1.0, torch.Size([2, 3, 32, 32]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from hmdc_modules._validation import describe
from hmdc_modules.adapters.timm import fused_attention
from hmdc_modules.balancer import GradientBalancer
from hmdc_modules.decomposition import SpatialSemanticDecomposer
from hmdc_modules.distillation import MutualDistillationLoss
from hmdc_modules.functional import soft_cross_entropy
from hmdc_modules.matching import HeterogeneousGradientMatcher

__all__ = ["HMDCObjective", "NonFiniteLossError", "ObjectiveStep", "hmdc_losses"]


class NonFiniteLossError(FloatingPointError):
    """A loss of the objective is NaN or infinite; nothing was back-propagated and the balancer is unchanged.

    Attributes:
        loss_name: The name of the first non-finite loss.
        value: Its value.
        group: The group (class) it was computed for.
    """

    def __init__(self, loss_name: str, value: float, group: int) -> None:
        super().__init__(f"loss {loss_name!r} is {value} (group {group})")
        self.loss_name, self.value, self.group = loss_name, value, group


class ObjectiveStep(NamedTuple):
    """What [`HMDCObjective.step`][hmdc_modules.objective.HMDCObjective.step] reports about one class.

    Attributes:
        losses: The unweighted losses, in the order of ``loss_names``.
        weights: The weights they were combined with (the balancer's, or ones).
        total: The weighted total.
    """

    losses: tuple[float, ...]
    weights: tuple[float, ...]
    total: float


def hmdc_losses(
    matcher: HeterogeneousGradientMatcher,
    real_x: Tensor,
    real_target: Tensor,
    synthetic_x: Tensor,
    synthetic_target: Tensor,
    *,
    decomposer: SpatialSemanticDecomposer | None = None,
    distillation: nn.Module | None = None,
    precision: str = "fp32",
) -> list[Tensor]:
    r"""The unweighted HMDC image losses of one class: $L_{GM,1}, \dots, L_{GM,M}$ and, with a decomposer, $L_{MD}$.

    Each model (an adapter: logits and tapped features from one forward pass) runs once on each batch; the same
    outputs give the cross-entropies whose parameter gradients are matched and the features that are distilled.

    Args:
        matcher: The gradient matcher; its ``models`` are the adapters.
        real_x: The (augmented) real batch.
        real_target: Its targets: class indices or soft targets (rows summing to one).
        synthetic_x: The (augmented, decoded) synthetic batch; gradients flow back to the stored images.
        synthetic_target: Its targets.
        decomposer: Aligns the models' features for distillation; ``None`` leaves the distillation term out.
        distillation: The feature distance $D_{MD}$ (default: ``MutualDistillationLoss()``).
        precision: The arithmetic of the forward passes and the matched gradients: ``fp32``, ``bf16`` (under
            ``torch.autocast``) or ``tf32`` (CUDA); see
            [`precision_context`][hmdc_modules.condensation.precision.precision_context]. Parameters and images
            are never converted; the losses are float32 (the distances sum float32 gradients).

    Returns:
        The $M$ (or $M + 1$) scalar losses, each with its graph to ``synthetic_x``.

    Raises:
        TypeError: If ``matcher`` is not a ``HeterogeneousGradientMatcher`` (and as the adapters and matcher raise).
        ValueError: If ``precision`` is unknown (or ``tf32`` off CUDA); as the adapters, the decomposer and the
            matcher raise on bad batches.

    Examples:
        >>> import torch
        >>> from hmdc_modules import CNNAdapter
        >>> from hmdc_modules.condensation import ConvNet
        >>> matcher = HeterogeneousGradientMatcher([CNNAdapter(ConvNet(num_classes=2, width=4))])
        >>> x = torch.randn(2, 3, 32, 32, requires_grad=True)
        >>> y = torch.zeros(2, dtype=torch.long)
        >>> [tuple(loss.shape) for loss in hmdc_losses(matcher, torch.randn(4, 3, 32, 32), y.repeat(2), x, y)]
        [()]
    """
    if not isinstance(matcher, HeterogeneousGradientMatcher):
        raise TypeError(f"`matcher` must be a HeterogeneousGradientMatcher, got {describe(matcher)}")
    from hmdc_modules.condensation.precision import precision_context  # the kit imports the method: not at the top

    with precision_context(precision, real_x.device if isinstance(real_x, Tensor) else "cpu"):
        return _losses(matcher, real_x, real_target, synthetic_x, synthetic_target, decomposer, distillation)


def _losses(
    matcher: HeterogeneousGradientMatcher,
    real_x: Tensor,
    real_target: Tensor,
    synthetic_x: Tensor,
    synthetic_target: Tensor,
    decomposer: SpatialSemanticDecomposer | None,
    distillation: nn.Module | None,
) -> list[Tensor]:
    adapters = list(matcher.models)
    out_r = [adapter(real_x) for adapter in adapters]
    out_s = [adapter(synthetic_x) for adapter in adapters]
    ce_r = [soft_cross_entropy(o.logits, real_target) for o in out_r]
    ce_s = [soft_cross_entropy(o.logits, synthetic_target) for o in out_s]
    losses = list(matcher.match(ce_r, ce_s).unbind())
    if decomposer is not None:
        distill = distillation if distillation is not None else MutualDistillationLoss()
        md_r = distill(decomposer([o.features for o in out_r]))
        md_s = distill(decomposer([o.features for o in out_s]))
        losses.append(matcher.match([md_r], [md_s], [matcher.all_parameters()])[0])
    return [loss.float() for loss in losses]  # float32 whatever the arithmetic (a no-op in fp32)


class HMDCObjective(nn.Module):
    r"""The HMDC image objective of one class at a time: unweighted losses, balanced total, fused backward.

    Holds the parts (adapters through the matcher, decomposer, distillation loss, balancer) and composes them;
    it owns no state of its own. Networks are typically rebuilt every outer iteration while the balancer lives on
    (reset at each rebuild): build a new objective around the same balancer.

    Args:
        adapters: One adapter per model (anything returning logits and features, see
            [`FeatureAdapter`][hmdc_modules.adapters.base.FeatureAdapter]), or a ready
            ``HeterogeneousGradientMatcher`` over them.
        decomposer: The feature aligner for the distillation term; ``None`` leaves the term out.
        distillation: The feature distance (default ``MutualDistillationLoss()`` when there is a decomposer).
        balancer: Balances the losses per class (its ``num_losses`` must equal ``len(loss_names)``); ``None``
            sums them with weight one.
        distance: The gradient distance of a matcher built here (ignored when ``adapters`` is a matcher).
        model_names: Names of the models in the loss names (``gm_<name>``); default ``0, 1, ...``.
        precision: The arithmetic of the losses' forward passes and matched gradients, and of the training and
            alignment losses: ``fp32`` (default), ``bf16`` (``torch.autocast``, CPU and CUDA; faster only where the
            hardware has bfloat16 units, see docs/performance.md) or ``tf32`` (CUDA). The backward passes to the
            images and to the parameters run outside the context, as autocast advises; parameters, images, the
            balancer's statistics and any optimiser state stay float32.

    Raises:
        TypeError: If ``adapters`` is neither a matcher nor a sequence of modules, or a part has the wrong type.
        ValueError: If there are no adapters, the decomposer covers another number of models, ``model_names`` has
            the wrong length, the balancer has another number of losses, or ``precision`` is unknown.

    Examples:
        >>> from hmdc_modules import CNNAdapter
        >>> from hmdc_modules.condensation import ConvNet
        >>> objective = HMDCObjective([CNNAdapter(ConvNet(num_classes=2, width=4))], precision="bf16")
        >>> images = torch.randn(2, 3, 32, 32, requires_grad=True)
        >>> y = torch.zeros(2, dtype=torch.long)
        >>> [loss.dtype for loss in objective.losses(torch.randn(4, 3, 32, 32), y.repeat(2), images, y)]
        [torch.float32]
        >>> HMDCObjective([CNNAdapter(ConvNet(num_classes=2, width=4))], precision="half")
        Traceback (most recent call last):
        ...
        ValueError: `precision` must be one of 'fp32', 'bf16', 'tf32', got 'half'
    """

    def __init__(
        self,
        adapters: Sequence[nn.Module] | HeterogeneousGradientMatcher,
        *,
        decomposer: SpatialSemanticDecomposer | None = None,
        distillation: nn.Module | None = None,
        balancer: GradientBalancer | None = None,
        distance: str = "sse",
        model_names: Sequence[str] | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        from hmdc_modules.condensation.precision import check_precision  # the kit imports the method

        self.precision = check_precision(precision)
        if isinstance(adapters, HeterogeneousGradientMatcher):
            matcher = adapters
        elif isinstance(adapters, Sequence) and not isinstance(adapters, str):
            if len(adapters) == 0:
                raise ValueError("`adapters` must hold at least one adapter, got an empty sequence")
            for i, adapter in enumerate(adapters):
                if not isinstance(adapter, nn.Module):
                    raise TypeError(f"`adapters[{i}]` must be an adapter (nn.Module), got {describe(adapter)}")
            matcher = HeterogeneousGradientMatcher(list(adapters), distance=distance)
        else:
            raise TypeError(
                f"`adapters` must be a sequence of adapters or a HeterogeneousGradientMatcher, got {describe(adapters)}"
            )
        self.matcher = matcher
        count = matcher.num_models
        if decomposer is not None and not isinstance(decomposer, SpatialSemanticDecomposer):
            raise TypeError(f"`decomposer` must be a SpatialSemanticDecomposer or None, got {describe(decomposer)}")
        if decomposer is not None and decomposer.num_models != count:
            raise ValueError(f"`decomposer` aligns {decomposer.num_models} models, but there are {count} adapters")
        if distillation is not None and not isinstance(distillation, nn.Module):
            raise TypeError(f"`distillation` must be an nn.Module or None, got {describe(distillation)}")
        self.decomposer = decomposer
        self.distillation = distillation if distillation is not None or decomposer is None else MutualDistillationLoss()
        if model_names is None:
            model_names = [str(i) for i in range(count)]
        if isinstance(model_names, str) or not isinstance(model_names, Sequence):
            raise TypeError(f"`model_names` must be a sequence of strings, got {describe(model_names)}")
        if len(model_names) != count or not all(isinstance(n, str) and n for n in model_names):
            raise ValueError(
                f"`model_names` must hold {count} non-empty strings (one per adapter), got {model_names!r}"
            )
        names = [f"gm_{n}" for n in model_names] + (["md"] if decomposer is not None else [])
        self._loss_names = tuple(names)
        if balancer is not None and not isinstance(balancer, GradientBalancer):
            raise TypeError(f"`balancer` must be a GradientBalancer or None, got {describe(balancer)}")
        if balancer is not None and balancer.num_losses != len(names):
            raise ValueError(
                f"`balancer` balances {balancer.num_losses} losses, but the objective has {len(names)}: {names}"
            )
        self.balancer = balancer

    @property
    def adapters(self) -> list[nn.Module]:
        """The models' adapters, in order."""
        return list(self.matcher.models)

    @property
    def loss_names(self) -> tuple[str, ...]:
        """``gm_<model>`` per model, then ``md`` when there is a decomposer."""
        return self._loss_names

    def losses(
        self, real_x: Tensor, real_target: Tensor, synthetic_x: Tensor, synthetic_target: Tensor
    ) -> list[Tensor]:
        """The unweighted losses of one class (see [`hmdc_losses`][hmdc_modules.objective.hmdc_losses]).

        Args:
            real_x: The augmented real batch.
            real_target: Its class indices or soft targets.
            synthetic_x: The augmented synthetic batch.
            synthetic_target: Its class indices or soft targets.

        Returns:
            One scalar per name of ``loss_names``.
        """
        return hmdc_losses(
            self.matcher,
            real_x,
            real_target,
            synthetic_x,
            synthetic_target,
            decomposer=self.decomposer,
            distillation=self.distillation,
            precision=self.precision,
        )

    def weights(self, group: int = 0) -> Tensor:
        """The current weights of ``group`` (the balancer's, no state change), or ones without a balancer."""
        if self.balancer is None:
            return torch.ones(len(self._loss_names))
        return self.balancer.weights(group)

    def forward(
        self,
        real_x: Tensor,
        real_target: Tensor,
        synthetic_x: Tensor,
        synthetic_target: Tensor,
        group: int = 0,
        *,
        sample: bool | None = None,
    ) -> Tensor:
        """The weighted image loss $L^c$ of one class, with its graph (the balancer's call counts as a step).

        Prefer [`step`][hmdc_modules.objective.HMDCObjective.step] or ``backward`` in a loop: they only write the
        images' gradient and skip the extra backward pass on sampling calls.

        Returns:
            The scalar total.
        """
        losses = self.losses(real_x, real_target, synthetic_x, synthetic_target)
        if self.balancer is None:
            return torch.stack(losses).sum()
        return self.balancer(losses, synthetic_x, group=group, sample=sample)

    def backward(
        self, losses: Sequence[Tensor], target: Tensor | Sequence[Tensor], group: int = 0, *, sample: bool | None = None
    ) -> Tensor:
        """Back-propagate the weighted total of ``losses`` into ``target.grad`` only (accumulating).

        With a balancer this is [`GradientBalancer.backward`][hmdc_modules.balancer.GradientBalancer.backward]
        (which samples by its interval rule, or as ``sample`` forces); without, the plain sum's backward pass.

        Args:
            losses: The losses from ``losses``.
            target: The stored synthetic images (leaf tensors).
            group: The class's group index in the balancer.
            sample: Force sampling on or off (``None``: the balancer's interval rule).

        Returns:
            The weighted total, detached.
        """
        if self.balancer is not None:
            return self.balancer.backward(list(losses), target, group=group, sample=sample)
        total = torch.stack(list(losses)).sum()
        total.backward(inputs=[target] if isinstance(target, Tensor) else list(target))
        return total.detach()

    def step(
        self,
        real_x: Tensor,
        real_target: Tensor,
        synthetic_x: Tensor,
        synthetic_target: Tensor,
        target: Tensor | Sequence[Tensor],
        group: int = 0,
        *,
        sample: bool | None = None,
    ) -> ObjectiveStep:
        """One class's contribution to an image update: losses, finiteness check, fused backward into ``target``.

        Args:
            real_x: The augmented real batch.
            real_target: Its class indices or soft targets.
            synthetic_x: The augmented synthetic batch, computed from ``target``.
            synthetic_target: Its class indices or soft targets.
            target: The stored synthetic images (leaf tensors) whose ``.grad`` receives the gradient.
            group: The class's group index in the balancer.
            sample: Force sampling on or off (``None``: the balancer's interval rule).

        Returns:
            The losses, the weights used and the total, as floats.

        Raises:
            NonFiniteLossError: If a loss is NaN or infinite (before anything is back-propagated).
        """
        losses = self.losses(real_x, real_target, synthetic_x, synthetic_target)
        values = [float(loss.detach()) for loss in losses]
        for name, value in zip(self._loss_names, values, strict=True):
            if not math.isfinite(value):
                raise NonFiniteLossError(name, value, group)
        total = self.backward(losses, target, group, sample=sample)
        weights = self.weights(group) if self.balancer is not None else torch.ones(len(losses))
        return ObjectiveStep(tuple(values), tuple(float(w) for w in weights.tolist()), float(total))

    def training_loss(self, x: Tensor, target: Tensor) -> Tensor:
        r"""The models' training loss on real data (method §4.2): $\sum_m CE(f_m(x), t) + D_{MD}(x)$.

        One forward pass per model; the distillation term (when there is a decomposer) reaches every model, the
        projections and the matching matrix. The pass differentiates once, so ViTs run it with fused attention
        ([`fused_attention`][hmdc_modules.adapters.timm.fused_attention]): back-propagate the loss once, do not
        differentiate it twice.

        Args:
            x: A (augmented) real batch.
            target: Its class indices or soft targets.

        Returns:
            The scalar loss, with its graph.

        Examples:
            >>> from hmdc_modules import CNNAdapter
            >>> from hmdc_modules.condensation import ConvNet
            >>> objective = HMDCObjective([CNNAdapter(ConvNet(num_classes=2, width=4))])
            >>> objective.training_loss(torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 1])).shape
            torch.Size([])
        """
        from hmdc_modules.condensation.precision import precision_context

        with precision_context(self.precision, x.device), fused_attention(*self.matcher.models):
            outs = [adapter(x) for adapter in self.matcher.models]
            loss = sum(soft_cross_entropy(o.logits, target) for o in outs)
            if self.decomposer is not None and self.distillation is not None:
                loss = loss + self.distillation(self.decomposer([o.features for o in outs]))
        return loss.float()  # type: ignore[union-attr]

    def alignment_loss(self, x: Tensor) -> Tensor:
        r"""The decomposer's training loss (method §4.3): $D_{MD}(x)$ on the models' features, computed without grad.

        Only the projections and the layer-matching matrix receive its gradient; the models are constants here.

        Args:
            x: A real batch.

        Returns:
            The scalar loss.

        Raises:
            ValueError: If the objective has no decomposer.
        """
        if self.decomposer is None or self.distillation is None:
            raise ValueError("alignment_loss needs a decomposer: this objective has no distillation term")
        from hmdc_modules.condensation.precision import precision_context

        with precision_context(self.precision, x.device):
            with torch.no_grad(), fused_attention(*self.matcher.models):
                features = [adapter(x).features for adapter in self.matcher.models]
            return self.distillation(self.decomposer(features)).float()

    def extra_repr(self) -> str:
        """The loss names (and the precision when it is not fp32)."""
        extra = f", precision={self.precision!r}" if self.precision != "fp32" else ""
        return f"loss_names={self._loss_names}{extra}"

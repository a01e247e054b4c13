"""Gradient matching through several heterogeneous models (HMDC method doc, sections 2 and 4.1).

[`HeterogeneousGradientMatcher`][hmdc_modules.matching.HeterogeneousGradientMatcher] holds the models whose
parameter gradients are matched, selects which of their parameters take part, and returns one distance per model
(or per loss pair) so that the caller can weight them, e.g. with a gradient balancer.

Note:
    Gradient matching differentiates through ``torch.autograd.grad`` (autograd through autograd), which
    ``torch.compile`` cannot trace. Run the matcher eagerly; the models inside may still be compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hmdc_modules._validation import (
    check_choice,
    check_module_sequence,
    check_non_negative_float,
    check_same_batch,
    check_tensor,
    describe,
)
from hmdc_modules.features import logits_of
from hmdc_modules.functional.matching import GRADIENT_DISTANCES, _match_gradients, _soft_cross_entropy

__all__ = ["HeterogeneousGradientMatcher", "ParameterSelection"]

ParameterSelection = None | Callable[[str, nn.Parameter], bool] | Sequence[Sequence[nn.Parameter]]
"""How a matcher chooses the matched parameters: ``None`` (all trainable ones), a predicate on
``(name, parameter)``, or one explicit list per model."""


_OBJECTIVE_HINT = "pass a custom `objective` for other outputs"


def _default_objective(index: int, output: Any, target: Tensor) -> Tensor:
    """Mean soft-target cross entropy of the model's logits (hard or soft ``target``)."""
    logits = logits_of(output, name=f"the output of `models[{index}]`", hint=_OBJECTIVE_HINT)
    return _soft_cross_entropy(logits, target, logits_name=f"logits of models[{index}]")


class HeterogeneousGradientMatcher(nn.Module):
    r"""Per-model gradient matching between a real and a synthetic batch, for any number of models.

    For each model $m$ with selected parameters $\theta_m$ and objective $\mathcal{L}_m$ (by default the
    soft-target cross entropy of its logits):

    $$
    d_m = D\bigl(\nabla_{\theta_m} \mathcal{L}_m(f_m(x^{\mathrm{real}}), t^{\mathrm{real}}),\;
        \nabla_{\theta_m} \mathcal{L}_m(f_m(x^{\mathrm{syn}}), t^{\mathrm{syn}})\bigr)
    $$

    where the real gradient is a constant and $D$ is a distance of
    [`gradient_distance`][hmdc_modules.functional.matching.gradient_distance]; the HMDC reference uses the sum of
    squared differences over all parameters (``"sse"``). As in DC and HMDC the matcher is called one class at a
    time. [`forward`][hmdc_modules.matching.HeterogeneousGradientMatcher.forward] runs the models itself;
    [`match`][hmdc_modules.matching.HeterogeneousGradientMatcher.match] takes losses computed by the caller, so
    that one forward pass of each batch can serve several objectives. The HMDC distillation term (method doc 4.1)
    is ``match([md_real], [md_syn], [matcher.all_parameters()])``.

    The matcher neither switches the models' train/eval mode nor zeros their ``.grad``: a ``backward()`` of the
    distances also writes into the models' ``.grad`` (zero it before a model update), and modules such as
    BatchNorm in train mode update their statistics at each forward.

    Args:
        models: The models (at least one). Each returns logits of shape $(B, K)$, or an object with a ``.logits``
            tensor such as [`AdapterOutput`][hmdc_modules.features.AdapterOutput]; any output works with a
            custom ``objective``.
        distance: ``"sse"`` (default), ``"mse"``, ``"cosine"`` or ``"dc"``.
        parameters: Which parameters are matched. ``None`` (default, the reference): all parameters of each model
            that require grad. A callable ``(name, parameter) -> bool``: those trainable parameters for which it
            returns ``True``. A sequence of one parameter list per model: exactly those (each must belong to its
            model). ``None`` and predicates are re-evaluated at each call, so re-created layers and frozen
            parameters are followed.
        objective: ``objective(model_index, model_output, target) -> scalar loss``. Defaults to
            [`soft_cross_entropy`][hmdc_modules.functional.matching.soft_cross_entropy] of the logits.
        eps: Constant of the ``"cosine"`` and ``"dc"`` distances.

    Raises:
        TypeError: If ``models`` is not a non-empty sequence of modules, ``parameters`` is of the wrong kind,
            ``objective`` is not callable, or an explicit parameter is not a tensor.
        ValueError: If ``distance`` is unknown, the number of parameter lists differs from the number of models,
            an explicit parameter does not belong to its model or does not require grad, or a selection is empty.

    Shape:
        - forward inputs: ``real_x`` $(B_r, \ast)$, ``real_target`` $(B_r,)$ or $(B_r, K)$, ``synthetic_x``
          $(B_s, \ast)$, ``synthetic_target`` $(B_s,)$ or $(B_s, K)$.
        - forward output: $(M,)$ for $M$ models.
        - match output: $(K,)$ for $K$ loss pairs.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> cnn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(4, 2))
        >>> mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.Tanh(), nn.Linear(16, 2))
        >>> matcher = HeterogeneousGradientMatcher([cnn, mlp])
        >>> real = {0: torch.randn(6, 3, 8, 8), 1: torch.randn(6, 3, 8, 8)}
        >>> synthetic = torch.randn(2, 2, 3, 8, 8, requires_grad=True)   # [classes, images per class, C, H, W]
        >>> total = 0.0
        >>> for c in range(2):                                            # one class at a time
        ...     real_t = torch.full((6,), c)
        ...     syn_t = torch.full((2,), c)
        ...     per_model = matcher(real[c], real_t, synthetic[c], syn_t)  # shape [2]: one distance per model
        ...     total = total + per_model.sum()
        >>> total.backward()
        >>> synthetic.grad.shape
        torch.Size([2, 2, 3, 8, 8])
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        distance: str = "sse",
        *,
        parameters: ParameterSelection = None,
        objective: Callable[[int, Any, Tensor], Tensor] | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        check_module_sequence("models", models)
        self.models = nn.ModuleList(models)
        self.distance = check_choice("distance", distance, GRADIENT_DISTANCES)
        self.eps = check_non_negative_float("eps", eps)
        if objective is not None and not callable(objective):
            raise TypeError(f"`objective` must be callable or None, got {describe(objective)}")
        self.objective: Callable[[int, Any, Tensor], Tensor] = (
            objective if objective is not None else _default_objective
        )
        self._custom_objective = objective is not None

        self._predicate: Callable[[str, nn.Parameter], bool] | None = None
        self._explicit: list[list[nn.Parameter]] | None = None
        if parameters is None:
            self._selection = "all"
        elif callable(parameters):
            self._predicate = parameters
            self._selection = "predicate"
        elif isinstance(parameters, Sequence) and not isinstance(parameters, str | Tensor):
            self._explicit = self._check_explicit(parameters)
            self._selection = "explicit"
        else:
            raise TypeError(
                f"`parameters` must be None, a callable (name, parameter) -> bool, or one list of parameters per "
                f"model, got {describe(parameters)}"
            )
        for index in range(self.num_models):  # fail early on empty selections
            self.parameters_of(index)
        # Which models (forward) and loss pairs (match) have passed the second-derivative check; each is checked
        # once, at its first call.
        self._second_order_checked: set[tuple[str, int]] = set()

    def _check_explicit(self, parameters: Sequence[Any]) -> list[list[nn.Parameter]]:
        if len(parameters) != self.num_models:
            raise ValueError(
                f"`parameters` must hold one parameter list per model ({self.num_models}), got {len(parameters)} lists"
            )
        lists: list[list[nn.Parameter]] = []
        for m, group in enumerate(parameters):
            if isinstance(group, Tensor) or not isinstance(group, Sequence):
                raise TypeError(f"`parameters[{m}]` must be a list or tuple of parameters, got {describe(group)}")
            owned = {id(p) for p in self.models[m].parameters()}
            for j, p in enumerate(group):
                if not isinstance(p, Tensor):
                    raise TypeError(f"`parameters[{m}][{j}]` must be an nn.Parameter, got {describe(p)}")
                if id(p) not in owned:
                    raise ValueError(
                        f"`parameters[{m}][{j}]` (shape {tuple(p.shape)}) is not a parameter of `models[{m}]`"
                    )
                if not p.requires_grad:
                    raise ValueError(f"`parameters[{m}][{j}]` (shape {tuple(p.shape)}) does not require grad")
            lists.append(list(group))
        return lists

    @property
    def num_models(self) -> int:
        """Number of models $M$ held by the matcher.

        Examples:
            >>> from torch import nn
            >>> HeterogeneousGradientMatcher([nn.Linear(2, 2), nn.Linear(2, 2)]).num_models
            2
        """
        return len(self.models)

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"`index` must be an int, got {describe(index)}")
        if not -self.num_models <= index < self.num_models:
            raise ValueError(f"`index` must lie in [0, {self.num_models}), got {index}")
        return index % self.num_models

    def _named_selection(self, index: int) -> list[tuple[str, nn.Parameter]]:
        index = self._check_index(index)
        model = self.models[index]
        if self._explicit is not None:
            names = {id(p): n for n, p in model.named_parameters()}
            selected = [(names.get(id(p), "?"), p) for p in self._explicit[index]]
        else:
            predicate = self._predicate
            selected = [
                (n, p)
                for n, p in model.named_parameters()
                if p.requires_grad and (predicate is None or predicate(n, p))
            ]
        if not selected:
            raise ValueError(
                f"the parameter selection ({self._selection}) selects no trainable parameter of `models[{index}]`"
            )
        return [(f"models[{index}].{n}", p) for n, p in selected]

    def parameters_of(self, index: int) -> list[nn.Parameter]:
        """The parameters of model ``index`` that take part in matching.

        Args:
            index: Model index in $[0, M)$ (negative indices count from the end).

        Returns:
            The selected parameters, in the model's registration order (or the order given explicitly).

        Raises:
            TypeError: If ``index`` is not an int.
            ValueError: If ``index`` is out of range or the selection is empty.

        Examples:
            >>> from torch import nn
            >>> matcher = HeterogeneousGradientMatcher([nn.Linear(2, 2)], parameters=lambda n, p: n == "weight")
            >>> [tuple(p.shape) for p in matcher.parameters_of(0)]
            [(2, 2)]
        """
        return [p for _, p in self._named_selection(index)]

    def all_parameters(self) -> list[nn.Parameter]:
        """The selected parameters of all models, model by model, each tensor once.

        Returns:
            The concatenation of ``parameters_of(m)`` over $m$, without duplicates (a parameter shared by two
            models is listed once).

        Examples:
            >>> from torch import nn
            >>> matcher = HeterogeneousGradientMatcher([nn.Linear(2, 2), nn.Linear(2, 3, bias=False)])
            >>> len(matcher.all_parameters())
            3
        """
        return [p for _, p in self._all_named()]

    def _all_named(self) -> list[tuple[str, nn.Parameter]]:
        seen: set[int] = set()
        result: list[tuple[str, nn.Parameter]] = []
        for m in range(self.num_models):
            for name, p in self._named_selection(m):
                if id(p) not in seen:
                    seen.add(id(p))
                    result.append((name, p))
        return result

    @staticmethod
    def _check_batch(x_name: str, x: Any, t_name: str, target: Any) -> None:
        check_tensor(x_name, x, nonempty=True)
        if x.ndim < 2:
            raise ValueError(f"`{x_name}` must have at least 2 dimensions (batch first), got shape {tuple(x.shape)}")
        check_tensor(t_name, target, nonempty=True)
        check_same_batch((x_name, t_name), x, target)

    def forward(self, real_x: Tensor, real_target: Tensor, synthetic_x: Tensor, synthetic_target: Tensor) -> Tensor:
        r"""Match each model's gradients on a real and a synthetic batch (usually of one class).

        Each model runs once on each batch; its objective gives the real and synthetic losses, which are matched
        over the model's selected parameters with
        [`match_gradients`][hmdc_modules.functional.matching.match_gradients].

        Args:
            real_x: Real inputs (no gradient flows back to them).
            real_target: Targets of the real batch: class indices or probabilities for the default objective.
            synthetic_x: Synthetic inputs; the result is differentiable with respect to them.
            synthetic_target: Targets of the synthetic batch.

        Returns:
            The per-model distances $(d_1, \dots, d_M)$.

        Raises:
            TypeError: If an input is not a tensor, or a model output has no logits (default objective).
            ValueError: If a batch is empty, an input has fewer than two dimensions, inputs and targets differ in
                batch size, a target does not suit the logits (the message names ``real_target`` or
                ``synthetic_target``), a loss is not a finite scalar, a parameter is reached by only one of the two
                losses, or (checked once per model, at its first call) the model's synthetic gradient has no second
                derivative (the message names the op and the model, e.g. ``hardsigmoid``; see
                [`first_op_without_second_derivative`][hmdc_modules.functional.matching.first_op_without_second_derivative]).
                A ``TypeError``/``ValueError`` a model (e.g. an adapter) raises on its input is re-raised naming
                ``real_x`` or ``synthetic_x``.

        Shape:
            - real_x: $(B_r, \ast)$; real_target: $(B_r,)$ or $(B_r, K)$
            - synthetic_x: $(B_s, \ast)$; synthetic_target: $(B_s,)$ or $(B_s, K)$
            - output: $(M,)$

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> matcher = HeterogeneousGradientMatcher([nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 5), nn.Tanh(),
            ...                                                                         nn.Linear(5, 3))])
            >>> soft = torch.tensor([[0.7, 0.3, 0.0]]).repeat(8, 1)       # e.g. cutmix-mixed real targets
            >>> syn = torch.randn(2, 4, requires_grad=True)
            >>> matcher(torch.randn(8, 4), soft, syn, torch.tensor([0, 0])).shape
            torch.Size([2])
        """
        self._check_batch("real_x", real_x, "real_target", real_target)
        self._check_batch("synthetic_x", synthetic_x, "synthetic_target", synthetic_target)
        distances: list[Tensor] = []
        for m, model in enumerate(self.models):
            named = self._named_selection(m)
            real_loss = self._loss(m, self._run(m, model, real_x, "real_x"), real_target, "real")
            synthetic_loss = self._loss(
                m, self._run(m, model, synthetic_x, "synthetic_x"), synthetic_target, "synthetic"
            )
            key = ("forward", m)
            distances.append(
                _match_gradients(
                    real_loss,
                    synthetic_loss,
                    [p for _, p in named],
                    self.distance,
                    retain_real_graph=False,
                    eps=self.eps,
                    real_name=f"objective of models[{m}] on real_x",
                    synthetic_name=f"objective of models[{m}] on synthetic_x",
                    parameters_name=f"parameters_of({m})",
                    parameter_names=[n for n, _ in named],
                    check_second_order=key not in self._second_order_checked,
                    model_name=self._model_label(m),
                )
            )
            self._second_order_checked.add(key)
        return torch.stack(distances)

    def _model_label(self, m: int) -> str:
        return f"`models[{m}]` ({type(self.models[m]).__name__})"

    @staticmethod
    def _run(m: int, model: nn.Module, x: Tensor, x_name: str) -> Any:
        """Run one model, naming the caller's argument in the adapters' input errors."""
        try:
            return model(x)
        except (TypeError, ValueError) as error:
            kind = TypeError if isinstance(error, TypeError) else ValueError
            raise kind(f"`{x_name}` does not suit `models[{m}]` ({type(model).__name__}): {error}") from error

    def _loss(self, m: int, output: Any, target: Tensor, batch: str) -> Tensor:
        """The objective of model ``m`` on one batch; the default one names the caller's target argument."""
        if self._custom_objective:
            return self.objective(m, output, target)
        where = f"models[{m}] on {batch}_x"
        logits = logits_of(output, name=f"the output of `{where}`", hint=_OBJECTIVE_HINT)
        return _soft_cross_entropy(logits, target, logits_name=f"logits of {where}", target_name=f"{batch}_target")

    def match(
        self,
        real_losses: Sequence[Tensor],
        synthetic_losses: Sequence[Tensor],
        parameters: Sequence[Sequence[Tensor]] | None = None,
        *,
        retain_real_graph: bool = True,
    ) -> Tensor:
        r"""Match $K$ pairs of losses computed by the caller.

        Loss pair $k$ is matched over ``parameters[k]``. Without ``parameters``, $K$ must equal the number of
        models and pair $k$ uses ``parameters_of(k)``. Example for HMDC, with one forward pass of each batch per
        model serving both objectives:

        ``d = matcher.match([ce1_r, ce2_r, md_r], [ce1_s, ce2_s, md_s],
        [matcher.parameters_of(0), matcher.parameters_of(1), matcher.all_parameters()])``.

        Args:
            real_losses: Finite scalar losses on real data.
            synthetic_losses: Finite scalar losses on synthetic data, paired with ``real_losses``.
            parameters: One list of tensors per loss pair, or ``None`` (see above).
            retain_real_graph: Keep the graphs of the real losses (default ``True``, so that several real losses
                may come from one forward pass). Pass ``False`` to free them as soon as they are used.

        Returns:
            The distances $(d_1, \dots, d_K)$.

        Raises:
            TypeError: If the loss lists are not lists/tuples, or a loss is not a floating scalar tensor.
            ValueError: If the loss lists are empty or differ in length, ``parameters`` is ``None`` while $K$
                differs from the number of models, ``parameters`` has the wrong length, or a pair fails the checks
                of [`match_gradients`][hmdc_modules.functional.matching.match_gradients] (the second-derivative
                check runs once per loss pair, at its first call).

        Shape:
            - real_losses, synthetic_losses: $K$ scalars
            - output: $(K,)$

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> from hmdc_modules.functional.matching import soft_cross_entropy
            >>> a, b = nn.Linear(4, 3), nn.Linear(4, 3)
            >>> matcher = HeterogeneousGradientMatcher([a, b])
            >>> real_x, syn_x = torch.randn(8, 4), torch.randn(2, 4, requires_grad=True)
            >>> real_t, syn_t = torch.zeros(8, dtype=torch.long), torch.zeros(2, dtype=torch.long)
            >>> za, zb, sa, sb = a(real_x), b(real_x), a(syn_x), b(syn_x)   # one forward per model and batch
            >>> ce = matcher.match([soft_cross_entropy(za, real_t), soft_cross_entropy(zb, real_t)],
            ...                    [soft_cross_entropy(sa, syn_t), soft_cross_entropy(sb, syn_t)])
            >>> md = matcher.match([nn.functional.mse_loss(za, zb)], [nn.functional.mse_loss(sa, sb)],
            ...                    [matcher.all_parameters()])
            >>> torch.cat([ce, md]).shape
            torch.Size([3])
        """
        for name, losses in (("real_losses", real_losses), ("synthetic_losses", synthetic_losses)):
            if isinstance(losses, Tensor) or not isinstance(losses, Sequence):
                raise TypeError(f"`{name}` must be a list or tuple of scalar losses, got {describe(losses)}")
            if len(losses) == 0:
                raise ValueError(f"`{name}` must hold at least one loss, got an empty {type(losses).__name__}")
        if len(real_losses) != len(synthetic_losses):
            raise ValueError(
                f"`real_losses` and `synthetic_losses` must have the same length, got {len(real_losses)} and "
                f"{len(synthetic_losses)}"
            )
        count = len(real_losses)
        groups: list[Any]
        names: list[list[str] | None]
        if parameters is None:
            if count != self.num_models:
                raise ValueError(
                    f"`parameters` is required when the number of loss pairs ({count}) differs from the number of "
                    f"models ({self.num_models}); pass one parameter list per loss pair"
                )
            named = [self._named_selection(k) for k in range(count)]
            groups = [[p for _, p in group] for group in named]
            names = [[n for n, _ in group] for group in named]
        else:
            if isinstance(parameters, Tensor) or not isinstance(parameters, Sequence):
                raise TypeError(f"`parameters` must be a list of parameter lists, got {describe(parameters)}")
            if len(parameters) != count:
                raise ValueError(
                    f"`parameters` must hold one parameter list per loss pair ({count}), got {len(parameters)} lists"
                )
            known = {
                id(p): f"models[{m}].{n}" for m, model in enumerate(self.models) for n, p in model.named_parameters()
            }
            groups = list(parameters)
            names = [
                [known.get(id(p), "not a parameter of the models") for p in group]
                if isinstance(group, Sequence) and not isinstance(group, Tensor)
                else None
                for group in groups
            ]
        distances = []
        for k in range(count):
            key = ("match", k)
            distances.append(
                _match_gradients(
                    real_losses[k],
                    synthetic_losses[k],
                    groups[k],
                    self.distance,
                    retain_real_graph=retain_real_graph,
                    eps=self.eps,
                    real_name=f"real_losses[{k}]",
                    synthetic_name=f"synthetic_losses[{k}]",
                    parameters_name=f"parameters[{k}]",
                    parameter_names=names[k],
                    check_second_order=key not in self._second_order_checked,
                    model_name=self._models_label(names[k]),
                )
            )
            self._second_order_checked.add(key)
        return torch.stack(distances)

    def _models_label(self, parameter_names: list[str] | None) -> str | None:
        """Name the models that own a parameter group (from names such as ``models[1].blocks.0.attn.qkv.weight``)."""
        owners = sorted(
            {int(n[len("models[") : n.index("]")]) for n in parameter_names or [] if n.startswith("models[")}
        )
        if not owners:
            return None
        labels = [self._model_label(m) for m in owners]
        return labels[0] if len(labels) == 1 else "one of " + ", ".join(labels)

    def extra_repr(self) -> str:
        """Summary of the matcher's configuration for ``repr``.

        Examples:
            >>> from torch import nn
            >>> HeterogeneousGradientMatcher([nn.Linear(2, 2)], "dc").extra_repr()
            "num_models=1, distance='dc', parameters=all, objective=soft_cross_entropy, eps=1e-06"
        """
        objective = getattr(self.objective, "__name__", type(self.objective).__name__)
        if not self._custom_objective:
            objective = "soft_cross_entropy"
        return (
            f"num_models={self.num_models}, distance={self.distance!r}, parameters={self._selection}, "
            f"objective={objective}, eps={self.eps}"
        )

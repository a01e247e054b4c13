"""Gradient Balance Module (GBM): weight several losses so that each moves the target tensor equally hard.

HMDC optimises the synthetic images with several objectives whose image-space gradients differ by orders of
magnitude (gradient matching through two different models, plus a mutual-distillation term). The
[`GradientBalancer`][hmdc_modules.balancer.GradientBalancer] keeps, per group (e.g. per class), a running
statistic of each loss's gradient magnitude on the target tensor and weights the losses by
$w_k = \\min_j A_j / A_k$ (see [`balance_weights`][hmdc_modules.functional.balancing.balance_weights]).
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from hmdc_modules._validation import (
    check_choice,
    check_non_negative_float,
    check_positive_int,
    check_scalar_loss,
    check_tensor,
    describe,
)
from hmdc_modules.functional.balancing import _balance_weights_unchecked

__all__ = ["BalancerRecord", "GradientBalancer"]

_ACCUMULATE = ("sum", "mean", "ema")
_NORMS = ("inf", "2")
_EXTRA_STATE_VERSION = 1


class BalancerRecord(NamedTuple):
    """One sampling call of a [`GradientBalancer`][hmdc_modules.balancer.GradientBalancer].

    Attributes:
        step: The balancer's global call index (0 for its very first call, counting calls of every group and
            never reset by ``reset()``).
        group: The group (e.g. class) the call was for.
        magnitudes: The gradient magnitude of each unweighted loss sampled at this call, as a float per loss.
        weights: The weights of the group after the accumulators were updated with ``magnitudes``.
    """

    step: int
    group: int
    magnitudes: tuple[float, ...]
    weights: tuple[float, ...]


class GradientBalancer(nn.Module):
    r"""Weight $K$ losses so their gradients on a target tensor have equal accumulated magnitude (HMDC's GBM).

    For every group $g$ (typically a class, since HMDC balances each class's losses separately) and loss $k$ the
    balancer keeps an accumulator $A_{g,k}$. On *sampling calls* it measures the gradient of each **unweighted**
    loss with respect to the target tensor(s), $m_k = \lVert \partial L_k / \partial S \rVert$ (max-abs entry for
    ``norm="inf"``, the reference; Euclidean norm for ``norm="2"``), and folds it into the accumulator:

    - ``"sum"`` (reference): $A_{g,k} \leftarrow A_{g,k} + m_k$;
    - ``"mean"``: $A_{g,k}$ is the running mean of the sampled $m_k$ (``init_value`` only until the first sample);
    - ``"ema"``: $A_{g,k} \leftarrow \beta A_{g,k} + (1 - \beta) m_k$ with $\beta$ = ``momentum``.

    On *every* call the weights are $w_{g,k} = \min_j A_{g,j} / A_{g,k}$ (largest weight exactly $1$; see
    [`balance_weights`][hmdc_modules.functional.balancing.balance_weights], which is zero-safe) and the call
    returns $\sum_k w_{g,k} L_k$ with the weights as constants. A group samples on its calls number
    $0, \tau, 2\tau, \dots$ since its last reset ($\tau$ = ``interval``), so weights exist from the first call.
    Since all losses of a group are sampled together, ``"mean"`` and ``"ema"`` give the same weights as
    ``"sum"`` up to how old samples are discounted, and with ``init_value=0`` all three are invariant to
    rescaling any single loss.

    ``init_value=0.0`` is the scale-free default. ``init_value=1e-6`` with ``accumulate="sum"``,
    ``norm="inf"`` and ``interval=10`` reproduces the reference implementation exactly; its $10^{-6}$ start
    breaks scale invariance for losses whose image gradients are below about $10^{-6}$ (their weight is then
    pinned near 1 while the other losses are scaled down to $10^{-6}$).

    Call [`reset`][hmdc_modules.balancer.GradientBalancer.reset] whenever the networks are re-initialised (the
    reference does it every outer iteration). Accumulators and counters are persistent buffers, the accumulator
    stays float32 under ``.double()``/``.half()``/``.to(dtype)`` and follows ``.to(device)``; the sampling history
    travels through ``get_extra_state`` as plain Python lists, so ``torch.load(..., weights_only=True)`` works.

    Args:
        num_losses: Number $K$ of losses to balance.
        num_groups: Number $G$ of independent groups (e.g. classes), each with its own accumulators.
        interval: A group samples gradient magnitudes every ``interval`` of its calls (reference: 10).
        init_value: Non-negative starting value of every accumulator, also restored by ``reset()``.
        accumulate: How samples are combined: ``"sum"`` (reference), ``"mean"`` or ``"ema"``.
        momentum: EMA factor $\beta \in [0, 1)$, used only by ``accumulate="ema"``.
        norm: Magnitude of one gradient: ``"inf"`` (max-abs entry, reference) or ``"2"`` (Euclidean norm).
            With several targets the magnitude is the max (``"inf"``) or the joint Euclidean norm (``"2"``)
            over all of them.
        history_size: Number of sampling records kept in ``history`` (oldest dropped first); 0 keeps none.
        loss_names: Optional unique names of the losses, in order; required to pass the losses as a mapping.

    Raises:
        TypeError: If an argument has the wrong type (e.g. a non-int ``num_losses``, a string ``loss_names``).
        ValueError: If an argument has a bad value (e.g. ``interval < 1``, negative ``init_value``,
            ``momentum`` outside $[0, 1)$, unknown ``accumulate``/``norm``, duplicate or miscounted
            ``loss_names``).

    Shape:
        - accumulator buffer: $(G, K)$, float32
        - num_samples buffer: $(G,)$, int64 (sampling calls per group since its last reset)
        - num_calls buffer: $(G,)$, int64 (calls per group since its last reset)
        - losses: $K$ scalars; target: any shape(s); output: scalar

    Examples:
        Two distribution-matching losses of very different scales on synthetic images, balanced per class:

        >>> import torch
        >>> from hmdc_modules.balancer import GradientBalancer
        >>> from hmdc_modules.functional.balancing import normalize_image_gradients
        >>> _ = torch.manual_seed(0)
        >>> real = torch.randn(2, 16, 3, 8, 8)  # [classes, images, C, H, W]
        >>> syn = torch.randn(2, 4, 3, 8, 8, requires_grad=True)
        >>> embed_a = torch.nn.Conv2d(3, 8, 3).requires_grad_(False)
        >>> embed_b = torch.nn.Conv2d(3, 8, 5).requires_grad_(False)
        >>> def mmd(embed, x, y):
        ...     return (embed(x).mean((0, 2, 3)) - embed(y).mean((0, 2, 3))).pow(2).sum()
        >>> balancer = GradientBalancer(num_losses=2, num_groups=2, interval=10, loss_names=["a", "b"])
        >>> opt = torch.optim.SGD([syn], lr=0.1)
        >>> for step in range(3):
        ...     opt.zero_grad()
        ...     for c in range(2):
        ...         losses = {"a": mmd(embed_a, real[c], syn[c]), "b": 1e4 * mmd(embed_b, real[c], syn[c])}
        ...         total = balancer(losses, syn, group=c)
        ...         total.backward()
        ...     _ = syn.grad.copy_(normalize_image_gradients(syn.grad))
        ...     opt.step()
        >>> balancer.weights(0).max().item()
        1.0
        >>> len(balancer.history)  # one sampling call per class so far
        2
    """

    accumulator: Tensor
    num_samples: Tensor
    num_calls: Tensor

    def __init__(
        self,
        num_losses: int,
        num_groups: int = 1,
        interval: int = 10,
        *,
        init_value: float = 0.0,
        accumulate: Literal["sum", "mean", "ema"] = "sum",
        momentum: float = 0.9,
        norm: Literal["inf", "2"] = "inf",
        history_size: int = 10_000,
        loss_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.num_losses = check_positive_int("num_losses", num_losses)
        self.num_groups = check_positive_int("num_groups", num_groups)
        self.interval = check_positive_int("interval", interval)
        self.init_value = check_non_negative_float("init_value", init_value)
        self.accumulate = check_choice("accumulate", accumulate, _ACCUMULATE)
        self.momentum = check_non_negative_float("momentum", momentum)
        if self.momentum >= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}")
        self.norm = check_choice("norm", norm, _NORMS)
        self.history_size = check_positive_int("history_size", history_size, minimum=0)
        self.loss_names = self._check_loss_names(loss_names, self.num_losses)

        self.register_buffer("accumulator", torch.full((self.num_groups, self.num_losses), self.init_value))
        self.register_buffer("num_samples", torch.zeros(self.num_groups, dtype=torch.int64))
        self.register_buffer("num_calls", torch.zeros(self.num_groups, dtype=torch.int64))
        self._global_step = 0
        self._sync_step = 0  # global step at the last sync(): records from here on are this rank's own
        self._history: deque[BalancerRecord] = deque(maxlen=self.history_size)
        self._resets: deque[tuple[int, int | None]] = deque(maxlen=self.history_size)

    # ------------------------------------------------------------------------------------------------ checks

    @staticmethod
    def _check_loss_names(loss_names: Any, num_losses: int) -> tuple[str, ...] | None:
        if loss_names is None:
            return None
        if isinstance(loss_names, str) or not isinstance(loss_names, Sequence):
            raise TypeError(f"`loss_names` must be a sequence of strings or None, got {describe(loss_names)}")
        names = tuple(loss_names)
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise TypeError(f"`loss_names[{i}]` must be a str, got {describe(name)}")
        if len(names) != num_losses:
            raise ValueError(f"`loss_names` must hold num_losses={num_losses} names, got {len(names)}: {names}")
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"`loss_names` must be unique, got duplicates {duplicates}")
        return names

    def _check_group(self, group: Any, name: str = "group") -> int:
        if isinstance(group, bool) or not isinstance(group, int):
            raise TypeError(f"`{name}` must be an int, got {describe(group)}")
        if not 0 <= group < self.num_groups:
            raise ValueError(
                f"`{name}` must be in [0, {self.num_groups - 1}] (num_groups={self.num_groups}), got {group}"
            )
        return group

    def _label(self, k: int) -> str:
        return f"losses[{self.loss_names[k]!r}]" if self.loss_names is not None else f"losses[{k}]"

    def _parse_losses(self, losses: Any) -> list[Tensor]:
        if isinstance(losses, Mapping):
            if self.loss_names is None:
                raise TypeError(
                    "`losses` was given as a mapping but the balancer has no `loss_names`; pass loss_names to the "
                    "constructor or give the losses as a sequence"
                )
            keys = set(losses.keys())
            missing = [n for n in self.loss_names if n not in keys]
            extra = sorted(str(k) for k in keys if k not in self.loss_names)
            if missing or extra:
                raise ValueError(
                    f"`losses` must have exactly the keys {list(self.loss_names)}, got missing {missing} and "
                    f"unexpected {extra}"
                )
            items = [losses[n] for n in self.loss_names]
        elif isinstance(losses, Sequence) and not isinstance(losses, str):
            items = list(losses)
            if len(items) != self.num_losses:
                raise ValueError(f"`losses` must hold {self.num_losses} losses (num_losses), got {len(items)}")
        else:
            raise TypeError(f"`losses` must be a sequence or a mapping of scalar tensors, got {describe(losses)}")
        checked = []
        for k, loss in enumerate(items):
            label = self._label(k)
            loss = check_scalar_loss(label, loss)
            if not loss.requires_grad:
                raise ValueError(f"`{label}` does not require grad, so it cannot put any gradient on `target`")
            checked.append(loss)
        return checked

    @staticmethod
    def _parse_targets(target: Any, *, leaf: bool) -> list[Tensor]:
        if isinstance(target, Tensor):
            named = [("target", target)]
        elif isinstance(target, Sequence) and not isinstance(target, str):
            if len(target) == 0:
                raise ValueError("`target` must be a tensor or a non-empty sequence of tensors, got an empty sequence")
            named = [(f"target[{i}]", t) for i, t in enumerate(target)]
        else:
            raise TypeError(f"`target` must be a tensor or a sequence of tensors, got {describe(target)}")
        for name, t in named:
            check_tensor(name, t, floating=True)
            if not t.requires_grad:
                raise ValueError(
                    f"`{name}` must require grad (the tensor being optimised, e.g. the synthetic images), got a "
                    f"tensor of shape {tuple(t.shape)} with requires_grad=False"
                )
            if t.numel() == 0:
                raise ValueError(f"`{name}` must have at least one element, got shape {tuple(t.shape)}")
            if leaf and not t.is_leaf:
                raise ValueError(
                    f"`{name}` must be a leaf tensor for GradientBalancer.backward (its gradient is written to "
                    f"`.grad`), got a non-leaf of shape {tuple(t.shape)}; use forward(...).backward() instead"
                )
        return [t for _, t in named]

    def _check_losses_finite(self, losses: list[Tensor], group: int) -> None:
        device = self.accumulator.device
        finite = torch.stack([torch.isfinite(loss.detach()).to(device) for loss in losses])
        if bool(finite.all()):
            return
        k = int((~finite).nonzero()[0, 0])
        value = float(losses[k].detach())
        raise ValueError(
            f"`{self._label(k)}` is not finite (value {value}) for group {group}; refusing to use it "
            f"(the balancer's state was left unchanged)"
        )

    # ------------------------------------------------------------------------------------------------ core

    def _gradients(self, losses: list[Tensor], targets: list[Tensor], group: int) -> list[tuple[Tensor | None, ...]]:
        grads = []
        for k, loss in enumerate(losses):
            g = torch.autograd.grad(loss, targets, retain_graph=True, allow_unused=True)
            if all(x is None for x in g):
                raise ValueError(
                    f"`{self._label(k)}` does not reach `target`: autograd found no path from the loss to the "
                    f"target tensor(s) (group {group})"
                )
            grads.append(g)
        return grads

    def _magnitudes(self, grads: list[tuple[Tensor | None, ...]], group: int) -> Tensor:
        device = self.accumulator.device
        values = []
        for per_target in grads:
            present = [g.detach() for g in per_target if g is not None]
            if self.norm == "inf":
                parts = torch.stack([g.abs().amax().to(device=device, dtype=torch.float32) for g in present])
                values.append(parts.amax())
            else:
                parts = torch.stack(
                    [torch.linalg.vector_norm(g).to(device=device, dtype=torch.float32) for g in present]
                )
                values.append(torch.linalg.vector_norm(parts))
        magnitudes = torch.stack(values)
        finite = torch.isfinite(magnitudes)
        if not bool(finite.all()):
            k = int((~finite).nonzero()[0, 0])
            raise ValueError(
                f"the gradient of `{self._label(k)}` w.r.t. `target` is not finite (magnitude "
                f"{float(magnitudes[k])} in float32) for group {group}; refusing to accumulate it "
                f"(the balancer's state was left unchanged)"
            )
        return magnitudes

    def _step(
        self, losses: Any, target: Any, group: Any, sample: Any, *, leaf: bool
    ) -> tuple[list[Tensor], list[Tensor], Tensor, list[tuple[Tensor | None, ...]] | None]:
        """Validate, optionally sample, update the state; return losses, targets, weights and sampled grads."""
        loss_list = self._parse_losses(losses)
        targets = self._parse_targets(target, leaf=leaf)
        g = self._check_group(group)
        if sample is not None and not isinstance(sample, bool):
            raise TypeError(f"`sample` must be None, True or False, got {describe(sample)}")
        self._check_losses_finite(loss_list, g)

        do_sample = sample if sample is not None else int(self.num_calls[g]) % self.interval == 0
        grads = magnitudes = None
        if do_sample:
            grads = self._gradients(loss_list, targets, g)
            magnitudes = self._magnitudes(grads, g)

        # Everything is validated: only now mutate the state.
        with torch.no_grad():
            if magnitudes is not None:
                row = self.accumulator[g]
                if self.accumulate == "sum":
                    row.add_(magnitudes)
                elif self.accumulate == "mean":
                    count = self.num_samples[g].to(row.dtype) + 1.0
                    row.add_((magnitudes - row) / count)
                else:
                    row.mul_(self.momentum).add_(magnitudes, alpha=1.0 - self.momentum)
                self.num_samples[g] += 1
            self.num_calls[g] += 1
            weights = _balance_weights_unchecked(self.accumulator[g])
        step = self._global_step
        self._global_step += 1
        if magnitudes is not None:
            self._history.append(BalancerRecord(step, g, tuple(magnitudes.tolist()), tuple(weights.tolist())))
        return loss_list, targets, weights, grads

    def forward(
        self,
        losses: Sequence[Tensor] | Mapping[str, Tensor],
        target: Tensor | Sequence[Tensor],
        group: int = 0,
        *,
        sample: bool | None = None,
    ) -> Tensor:
        r"""Update the group's statistic if this is a sampling call, then return the weighted total loss.

        Computes $\sum_k w_{g,k} L_k$ with the weights as constants (no gradient flows into them), ready for
        ``.backward()``. On sampling calls it first runs one ``torch.autograd.grad`` per loss (with
        ``retain_graph=True``) to measure each unweighted loss's gradient on ``target``.

        Under ``torch.utils.flop_counter.FlopCounterMode`` (whose module tracker hooks the inputs of every module
        call), a sampling call made as ``balancer(...)`` fails inside PyTorch ("A leaf node was passed to
        _will_engine_execute_node"), because ``target`` is a leaf input of the call; the hook then stays on
        ``target`` and later sampling calls fail too. Count such steps with
        [`backward`][hmdc_modules.balancer.GradientBalancer.backward], or with ``balancer.forward(...)``.

        Args:
            losses: The $K$ scalar losses, as a sequence in a fixed order or as a mapping keyed by ``loss_names``.
            target: The tensor(s) the losses are balanced for (e.g. the synthetic images); must require grad.
            group: Which group's accumulators to use (e.g. the class index), in $[0, G)$.
            sample: ``None`` follows the interval rule (sample on the group's calls $0, \tau, 2\tau, \dots$ since
                its last reset); ``True``/``False`` forces sampling on or off for this call.

        Returns:
            The weighted total, a scalar with the losses' dtype and device.

        Raises:
            TypeError: If ``losses``, a loss, ``target``, ``group`` or ``sample`` has the wrong type, or a mapping
                is given without ``loss_names``.
            ValueError: If the number of losses (or the mapping's keys) is wrong, a loss is not a scalar, does not
                require grad, is not finite, or (on sampling calls) does not reach ``target`` or has a non-finite
                gradient; if ``target`` does not require grad or is empty; if ``group`` is out of range. The
                balancer's state is unchanged when an error is raised.

        Shape:
            - losses: $K$ tensors of shape $()$ (or $(1,)$)
            - target: any shape, or a sequence of tensors of any shapes
            - output: $()$

        Examples:
            >>> import torch
            >>> x = torch.randn(4, 3, 8, 8, requires_grad=True)
            >>> balancer = GradientBalancer(num_losses=2)
            >>> total = balancer([x.pow(2).sum(), 100.0 * x.abs().mean()], x)
            >>> total.backward()
        """
        loss_list, _, weights, _ = self._step(losses, target, group, sample, leaf=False)
        return self._weighted_total(loss_list, weights)

    @staticmethod
    def _weighted_total(losses: list[Tensor], weights: Tensor) -> Tensor:
        terms = [weights[k].to(device=loss.device, dtype=loss.dtype) * loss for k, loss in enumerate(losses)]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def backward(
        self,
        losses: Sequence[Tensor] | Mapping[str, Tensor],
        target: Tensor | Sequence[Tensor],
        group: int = 0,
        *,
        sample: bool | None = None,
    ) -> Tensor:
        r"""Like ``forward(...).backward()`` restricted to ``target``, without extra passes on sampling calls.

        On sampling calls the per-loss gradients $g_k = \partial L_k / \partial S$ are already computed to measure
        the magnitudes, so this method writes $\sum_k w_{g,k}\, g_k$ straight into ``target.grad`` (accumulating
        like ``.backward()`` does) instead of back-propagating the total again. On plain calls it runs
        ``total.backward(inputs=target)``. **Only ``target`` receives a gradient, on every call**: other leaves
        (model parameters) are left alone, which also spares the work of their gradients. In gradient matching
        those are second-order terms that the image update never uses (about 8% of a class-step's FLOPs at the
        paper's shapes, see ``benchmarks/step.py``). Use ``forward(...).backward()`` when other leaves need the
        gradient too.

        Args:
            losses: The $K$ scalar losses, as a sequence or a mapping keyed by ``loss_names``.
            target: The leaf tensor(s) being optimised; must require grad.
            group: Which group's accumulators to use, in $[0, G)$.
            sample: ``None`` follows the interval rule; ``True``/``False`` forces sampling on or off.

        Returns:
            The weighted total, detached.

        Raises:
            TypeError: As for ``forward``.
            ValueError: As for ``forward``, and if a target is not a leaf tensor.

        Shape:
            - losses: $K$ tensors of shape $()$ (or $(1,)$)
            - target: any shape, or a sequence of tensors of any shapes
            - output: $()$

        Examples:
            >>> import torch
            >>> x = torch.randn(4, 3, 8, 8, requires_grad=True)
            >>> balancer = GradientBalancer(num_losses=2)
            >>> total = balancer.backward([x.pow(2).sum(), 100.0 * x.abs().mean()], x)
            >>> x.grad.shape
            torch.Size([4, 3, 8, 8])
        """
        loss_list, targets, weights, grads = self._step(losses, target, group, sample, leaf=True)
        total = self._weighted_total(loss_list, weights)
        if grads is None:
            total.backward(inputs=targets)
            return total.detach()
        with torch.no_grad():
            for i, t in enumerate(targets):
                combined = None
                for k, per_target in enumerate(grads):
                    g = per_target[i]
                    if g is None:
                        continue
                    term = weights[k].to(device=g.device, dtype=g.dtype) * g
                    combined = term if combined is None else combined + term
                if combined is None:
                    continue
                if t.grad is None:
                    t.grad = combined
                else:
                    t.grad.add_(combined)
        return total.detach()

    # ------------------------------------------------------------------------------------------------ state

    def weights(self, group: int = 0) -> Tensor:
        r"""The current weights $w_{g,k} = \min_j A_{g,j} / A_{g,k}$ of one group (no state change).

        Args:
            group: The group, in $[0, G)$.

        Returns:
            A new float32 tensor of $K$ weights on the balancer's device, maximum exactly $1$.

        Raises:
            TypeError: If ``group`` is not an int.
            ValueError: If ``group`` is out of range.

        Shape:
            - output: $(K,)$

        Examples:
            >>> GradientBalancer(num_losses=3).weights(0)
            tensor([1., 1., 1.])
        """
        g = self._check_group(group)
        return _balance_weights_unchecked(self.accumulator[g].detach().clone())

    def reset(self, group: int | None = None) -> None:
        """Restart the statistic, e.g. after the networks were re-initialised.

        Sets the accumulators back to ``init_value`` and the group's call and sample counters to 0 (so the next
        call samples). The sampling ``history`` and the global step are kept; the reset itself is recorded in
        [`resets`][hmdc_modules.balancer.GradientBalancer.resets].

        Args:
            group: The group to reset, or ``None`` for all groups.

        Raises:
            TypeError: If ``group`` is neither ``None`` nor an int.
            ValueError: If ``group`` is out of range.

        Examples:
            >>> balancer = GradientBalancer(num_losses=2, num_groups=3)
            >>> balancer.reset()
            >>> balancer.reset(group=1)
            >>> balancer.resets
            [(0, None), (0, 1)]
        """
        index: int | slice = slice(None) if group is None else self._check_group(group)
        with torch.no_grad():
            self.accumulator[index] = self.init_value
            self.num_samples[index] = 0
            self.num_calls[index] = 0
        self._resets.append((self._global_step, group))

    @property
    def global_step(self) -> int:
        """Number of calls (``forward`` or ``backward``, all groups) made so far; not affected by ``reset()``."""
        return self._global_step

    @property
    def history(self) -> list[BalancerRecord]:
        """The sampling records, oldest first: one [`BalancerRecord`][hmdc_modules.balancer.BalancerRecord] per
        sampling call, at most ``history_size`` of them (the oldest are dropped first)."""
        return list(self._history)

    @property
    def resets(self) -> list[tuple[int, int | None]]:
        """The resets, oldest first, as ``(global_step, group)``: ``global_step`` is the step of the first call
        after the reset, ``group`` is ``None`` for a reset of all groups (at most ``history_size`` kept)."""
        return list(self._resets)

    def history_arrays(self, group: int | None = None) -> dict[str, Tensor]:
        """The history as tensors, for plotting weights or magnitudes over time.

        Args:
            group: Keep only this group's records, or ``None`` for all.

        Returns:
            A dict with ``"step"`` and ``"group"`` (int64, $(N,)$) and ``"magnitudes"`` and ``"weights"``
            (float32, $(N, K)$), on the CPU; $N = 0$ when there is nothing to show.

        Raises:
            TypeError: If ``group`` is neither ``None`` nor an int.
            ValueError: If ``group`` is out of range.

        Shape:
            - step, group: $(N,)$
            - magnitudes, weights: $(N, K)$

        Examples:
            >>> arrays = GradientBalancer(num_losses=2).history_arrays()
            >>> arrays["weights"].shape
            torch.Size([0, 2])
        """
        if group is not None:
            self._check_group(group)
        records = [r for r in self._history if group is None or r.group == group]
        k = self.num_losses
        return {
            "step": torch.tensor([r.step for r in records], dtype=torch.int64),
            "group": torch.tensor([r.group for r in records], dtype=torch.int64),
            "magnitudes": torch.tensor([list(r.magnitudes) for r in records], dtype=torch.float32).reshape(-1, k),
            "weights": torch.tensor([list(r.weights) for r in records], dtype=torch.float32).reshape(-1, k),
        }

    def get_extra_state(self) -> dict[str, Any]:
        """The non-tensor state (global step, history, resets) as plain Python values for ``state_dict``."""
        return {
            "version": _EXTRA_STATE_VERSION,
            "num_losses": self.num_losses,
            "global_step": self._global_step,
            "history": [[r.step, r.group, list(r.magnitudes), list(r.weights)] for r in self._history],
            "resets": [[step, -1 if group is None else group] for step, group in self._resets],
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore what ``get_extra_state`` returned.

        Args:
            state: The dict stored under ``_extra_state`` in a state dict.

        Raises:
            TypeError: If ``state`` is not a dict.
            ValueError: If ``state`` comes from a balancer with a different number of losses or is malformed.
        """
        if not isinstance(state, dict):
            raise TypeError(f"`state` must be the dict returned by get_extra_state, got {describe(state)}")
        try:
            num_losses = int(state["num_losses"])
            global_step = int(state["global_step"])
            history = [
                BalancerRecord(int(s), int(g), tuple(float(x) for x in m), tuple(float(x) for x in w))
                for s, g, m, w in state["history"]
            ]
            resets = [(int(s), None if int(g) < 0 else int(g)) for s, g in state["resets"]]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"`state` is not a valid GradientBalancer extra state: {error!r}") from error
        if num_losses != self.num_losses:
            raise ValueError(
                f"`state` comes from a balancer with num_losses={num_losses}, this one has num_losses={self.num_losses}"
            )
        self._global_step = global_step
        self._sync_step = global_step
        self._history = deque(history, maxlen=self.history_size)
        self._resets = deque(resets, maxlen=self.history_size)

    def sync(self, owned_groups: Iterable[int], process_group: Any = None) -> None:
        r"""Merge the state of a balancer whose groups are split over the ranks of a process group, in place.

        In a distributed condensation run each group (class) is balanced by one rank only, the one that owns it,
        so between two syncs a rank's balancer is current for its own groups alone. ``sync`` gathers every
        group's accumulator row and sample and call counters from its owner, the sampling records every rank made
        since the last sync, and the number of calls each rank made since then, and gives every rank the merged
        state. Call it on every rank at the same point (it is a collective), whenever a whole state is needed:
        before a checkpoint, a plot or a ``state_dict``.

        The merged accumulators and counters are exactly those a single process would hold, bitwise (each row
        is computed by one rank). ``global_step`` becomes the calls of all ranks together; the sampling records
        keep the step at which their own rank made them (counted from the last sync), so their ``step`` values
        interleave ranks. Resets since the last sync are taken from the group's rank 0 (every rank is expected to
        reset at the same points, e.g. at each network re-initialisation).

        Without an initialised ``torch.distributed`` process group this only checks ``owned_groups``: a single
        process's balancer is already whole.

        Args:
            owned_groups: The groups this rank balanced since the last sync; every group must be owned by exactly
                one rank of the process group.
            process_group: The ``torch.distributed`` process group to sync over; ``None`` is the default group.

        Raises:
            TypeError: If ``owned_groups`` is not an iterable of ints.
            ValueError: If a group is out of range or listed twice, or (with a process group) if a group is
                claimed by no rank or by two; the state is then left unchanged on every rank.

        Examples:
            >>> balancer = GradientBalancer(num_losses=2, num_groups=4)
            >>> balancer.sync([0, 2])  # a plain process: nothing to merge
            >>> balancer.sync([0, 0])
            Traceback (most recent call last):
            ...
            ValueError: `owned_groups` must list each group once, got [0, 0]
        """
        owned = self._check_owned_groups(owned_groups)
        if not (dist.is_available() and dist.is_initialized()):
            return
        base = self._sync_step
        mine = {
            "owned": owned,
            "accumulator": self.accumulator[owned].detach().cpu(),
            "num_samples": self.num_samples[owned].detach().cpu(),
            "num_calls": self.num_calls[owned].detach().cpu(),
            "calls": self._global_step - base,
            "history": [tuple(r) for r in self._history if r.step >= base],
            "resets": [reset for reset in self._resets if reset[0] >= base],
        }
        everyone: list[Any] = [None] * dist.get_world_size(process_group)
        dist.all_gather_object(everyone, mine, group=process_group)
        claimed = sorted(g for part in everyone for g in part["owned"])
        if claimed != list(range(self.num_groups)):
            raise ValueError(
                f"`owned_groups`: every one of the {self.num_groups} groups must be owned by exactly one rank, "
                f"the ranks claimed {claimed}"
            )
        with torch.no_grad():
            for part in everyone:
                index = torch.tensor(part["owned"], dtype=torch.long, device=self.accumulator.device)
                self.accumulator[index] = part["accumulator"].to(self.accumulator.device)
                self.num_samples[index] = part["num_samples"].to(self.num_samples.device)
                self.num_calls[index] = part["num_calls"].to(self.num_calls.device)
        old = [r for r in self._history if r.step < base]
        new = [BalancerRecord(*r) for part in everyone for r in part["history"]]
        new.sort(key=lambda r: (r.step, r.group))
        old_resets = [reset for reset in self._resets if reset[0] < base]
        self._history = deque(old + new, maxlen=self.history_size)
        self._resets = deque(old_resets + list(everyone[0]["resets"]), maxlen=self.history_size)
        self._global_step = base + sum(part["calls"] for part in everyone)
        self._sync_step = self._global_step

    def _check_owned_groups(self, owned_groups: Any) -> list[int]:
        if isinstance(owned_groups, str | bytes | Tensor) or not isinstance(owned_groups, Iterable):
            raise TypeError(f"`owned_groups` must be an iterable of int group indices, got {describe(owned_groups)}")
        owned = []
        for g in owned_groups:
            try:
                index = operator.index(g)
            except TypeError:
                raise TypeError(f"`owned_groups` must hold int group indices, got {describe(g)}") from None
            if isinstance(g, bool) or not 0 <= index < self.num_groups:
                raise ValueError(
                    f"`owned_groups` must hold groups in [0, {self.num_groups - 1}] (num_groups={self.num_groups}), "
                    f"got {g!r}"
                )
            owned.append(int(index))
        if len(set(owned)) != len(owned):
            raise ValueError(f"`owned_groups` must list each group once, got {owned}")
        return sorted(owned)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> GradientBalancer:
        # Module dtype conversions (.double(), .half(), .to(dtype)) must not touch the float32 accumulator,
        # while device moves must: apply fn, then restore the exact float32 values on the new device.
        before = self.accumulator
        super()._apply(fn, recurse)
        after = self.accumulator
        if after.dtype != torch.float32:
            self._buffers["accumulator"] = before.to(device=after.device, dtype=torch.float32)
        return self

    def extra_repr(self) -> str:
        parts = [
            f"num_losses={self.num_losses}",
            f"num_groups={self.num_groups}",
            f"interval={self.interval}",
            f"init_value={self.init_value}",
            f"accumulate={self.accumulate!r}",
        ]
        if self.accumulate == "ema":
            parts.append(f"momentum={self.momentum}")
        parts.append(f"norm={self.norm!r}")
        if self.loss_names is not None:
            parts.append(f"loss_names={list(self.loss_names)}")
        return ", ".join(parts)

"""Functional gradient matching: soft-target cross entropy, distances between gradient lists, matching of two losses.

Gradient matching compares the parameter gradients that a *real* batch and a *synthetic* batch induce in the same
network and returns a distance that is differentiable with respect to the synthetic batch. Following the HMDC
reference (method doc, section 2), the real gradient is a constant (computed without a graph) and the synthetic
gradient keeps its graph (``create_graph=True``) so that the distance can be back-propagated to the synthetic images.

Note:
    Gradient matching differentiates through ``torch.autograd.grad`` (autograd through autograd). ``torch.compile``
    cannot trace that, so these functions are meant to run eagerly; compile the models themselves if you wish.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from hmdc_modules.functional.matching import match_gradients, soft_cross_entropy
    >>> net = nn.Linear(4, 3)
    >>> real_x, real_y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    >>> syn_x = torch.randn(2, 4, requires_grad=True)
    >>> syn_y = torch.tensor([1, 1])
    >>> distance = match_gradients(
    ...     soft_cross_entropy(net(real_x), real_y), soft_cross_entropy(net(syn_x), syn_y), list(net.parameters())
    ... )
    >>> distance.backward()
    >>> syn_x.grad.shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hmdc_modules._validation import (
    check_choice,
    check_finite,
    check_non_negative_float,
    check_scalar_loss,
    check_tensor,
    describe,
)

__all__ = [
    "GRADIENT_DISTANCES",
    "REDUCTIONS",
    "first_op_without_second_derivative",
    "gradient_distance",
    "match_gradients",
    "soft_cross_entropy",
]

GRADIENT_DISTANCES: tuple[str, ...] = ("sse", "mse", "cosine", "dc")
"""The distances between gradient lists accepted by
[`gradient_distance`][hmdc_modules.functional.matching.gradient_distance] (the feature distances of mutual
distillation are [`FEATURE_DISTANCES`][hmdc_modules.functional.distillation.FEATURE_DISTANCES])."""
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
"""The reductions accepted by [`soft_cross_entropy`][hmdc_modules.functional.matching.soft_cross_entropy] and by
[`mutual_distillation_loss`][hmdc_modules.functional.distillation.mutual_distillation_loss]."""

_NOT_IMPLEMENTED_NODE = "torch::autograd::NotImplemented"


def __getattr__(name: str) -> Any:
    """Deprecated alias: ``DISTANCES`` is now ``GRADIENT_DISTANCES``."""
    if name == "DISTANCES":
        warnings.warn(
            "hmdc_modules.functional.matching.DISTANCES is now GRADIENT_DISTANCES; the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return GRADIENT_DISTANCES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def soft_cross_entropy(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    r"""Cross entropy with hard (class index) or soft (probability) targets.

    For logits $z_i \in \mathbb{R}^K$ and a target distribution $t_i$ (one-hot for a class index), the per-sample
    loss is $\ell_i = -\sum_{k=1}^{K} t_{ik} \log \operatorname{softmax}(z_i)_k$. Soft targets arise from label
    mixing such as cutmix; they are used as given (not renormalised).

    Args:
        logits: Unnormalised class scores, floating dtype.
        target: Either integer class indices in $[0, K)$ of shape $(B,)$, or floating class probabilities of shape
            $(B, K)$ (cast to the dtype of ``logits``).
        reduction: ``"mean"`` (average over the batch), ``"sum"`` or ``"none"`` (per-sample losses).

    Returns:
        The loss: a scalar for ``"mean"``/``"sum"``, shape $(B,)$ for ``"none"``. Device and dtype follow ``logits``.

    Raises:
        TypeError: If ``logits`` is not a floating tensor, or ``target`` is not a tensor, or a 1-D ``target`` is not
            of an integer dtype, or a 2-D ``target`` is not floating.
        ValueError: If the shapes disagree, the batch is empty, a class index is out of range or ``reduction`` is
            unknown.

    Shape:
        - logits: $(B, K)$
        - target: $(B,)$ (indices) or $(B, K)$ (probabilities)
        - output: $()$, or $(B,)$ if ``reduction="none"``

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> hard = soft_cross_entropy(logits, torch.tensor([0, 1]))
        >>> soft = soft_cross_entropy(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        >>> torch.allclose(hard, soft)
        True
    """
    return _soft_cross_entropy(logits, target, reduction)


def _soft_cross_entropy(
    logits: Tensor, target: Tensor, reduction: str = "mean", *, logits_name: str = "logits", target_name: str = "target"
) -> Tensor:
    """Implementation of ``soft_cross_entropy``; error messages call the arguments by the given names."""
    check_choice("reduction", reduction, REDUCTIONS)
    check_tensor(logits_name, logits, ndim=2, floating=True, nonempty=True)
    check_tensor(target_name, target, ndim=(1, 2))
    if target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"`{target_name}` must have the batch size of `{logits_name}` ({logits.shape[0]}), got shape "
            f"{tuple(target.shape)} for `{logits_name}` of shape {tuple(logits.shape)}"
        )
    num_classes = logits.shape[1]
    if target.ndim == 1:
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(
                f"`{target_name}` of shape {tuple(target.shape)} holds class indices and must have an integer "
                f"dtype, got {target.dtype}; pass probabilities as a tensor of shape (B, K)"
            )
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"`{target_name}` class indices must lie in [0, {num_classes}) for the {num_classes} classes of "
                f"`{logits_name}`, got {bad}"
            )
        return torch.nn.functional.cross_entropy(logits, target.long(), reduction=reduction)

    if target.shape != logits.shape:
        raise ValueError(
            f"`{target_name}` probabilities must have the shape of `{logits_name}` {tuple(logits.shape)}, got "
            f"{tuple(target.shape)}"
        )
    if not target.is_floating_point():
        raise TypeError(
            f"`{target_name}` of shape {tuple(target.shape)} holds probabilities and must be floating, got "
            f"{target.dtype}"
        )
    per_sample = -(target.to(logits.dtype) * torch.log_softmax(logits, dim=1)).sum(dim=1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _as_tensor_list(name: str, tensors: Any) -> list[Tensor]:
    """Check that ``tensors`` is a non-empty list/tuple of tensors and return it as a list."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"`{name}` must be a list or tuple of tensors, got {describe(tensors)}")
    if len(tensors) == 0:
        raise ValueError(f"`{name}` must hold at least one tensor, got an empty {type(tensors).__name__}")
    for index, item in enumerate(tensors):
        if not isinstance(item, Tensor):
            raise TypeError(f"`{name}[{index}]` must be a torch.Tensor, got {describe(item)}")
    return list(tensors)


def _check_eps(eps: Any) -> float:
    return check_non_negative_float("eps", eps)


def gradient_distance(
    real: Sequence[Tensor], synthetic: Sequence[Tensor], distance: str = "sse", *, eps: float = 1e-6
) -> Tensor:
    r"""Distance between two lists of per-parameter gradients.

    With $a_p$ and $b_p$ the real and synthetic gradients of parameter tensor $p$ ($P$ tensors in all):

    - ``"sse"`` (the HMDC reference, default): $\sum_p \sum_j (a_{pj} - b_{pj})^2$.
    - ``"mse"``: the ``"sse"`` value divided by the total element count $\sum_p |a_p|$.
    - ``"cosine"``: $1 - \frac{\langle a, b \rangle}{\lVert a \rVert \lVert b \rVert + \epsilon}$ between the
      concatenations $a$, $b$ of all flattened tensors.
    - ``"dc"`` (Dataset Condensation's layer-wise distance): every tensor with at least two dimensions is viewed
      as a matrix of shape $(O_p, -1)$ (one row per output channel $o$) and contributes
      $\sum_{o} \bigl(1 - \frac{\langle a_{po}, b_{po} \rangle}{\lVert a_{po} \rVert \lVert b_{po} \rVert +
      \epsilon}\bigr)$. Tensors with fewer than two dimensions (biases, normalisation affine parameters, scalars)
      contribute $0$, as in DC. Note that an all-zero row pair contributes $1$, also as in DC.

    Because of $\epsilon$, ``"cosine"`` and ``"dc"`` are not exactly zero for identical non-zero inputs (each
    cosine term is $1 - \lVert a \rVert^2 / (\lVert a \rVert^2 + \epsilon)$); ``"sse"`` and ``"mse"`` are.

    Args:
        real: Gradients from the real batch (usually constants).
        synthetic: Gradients from the synthetic batch, in the same order and of the same shapes as ``real``.
        distance: One of ``"sse"``, ``"mse"``, ``"cosine"``, ``"dc"``.
        eps: Non-negative constant added to the norm product in ``"cosine"`` and ``"dc"``.

    Returns:
        A scalar tensor, differentiable with respect to both lists. Device and dtype follow the inputs (promoted).

    Raises:
        TypeError: If either list is not a list/tuple of tensors.
        ValueError: If ``distance`` is unknown, ``eps`` is negative, a list is empty, the lists differ in length,
            or the tensors at some index differ in shape (the message names the index).

    Shape:
        - real, synthetic: $P$ tensors; ``real[p]`` and ``synthetic[p]`` share any shape.
        - output: $()$

    Examples:
        >>> import torch
        >>> a = [torch.ones(2, 3), torch.zeros(2)]
        >>> b = [torch.zeros(2, 3), torch.ones(2)]
        >>> gradient_distance(a, b, "sse")
        tensor(8.)
        >>> gradient_distance(a, b, "mse")
        tensor(1.)
    """
    check_choice("distance", distance, GRADIENT_DISTANCES)
    eps = _check_eps(eps)
    real_list = _as_tensor_list("real", real)
    syn_list = _as_tensor_list("synthetic", synthetic)
    if len(real_list) != len(syn_list):
        raise ValueError(
            f"`real` and `synthetic` must hold the same number of tensors, got {len(real_list)} and {len(syn_list)}"
        )
    for index, (a, b) in enumerate(zip(real_list, syn_list, strict=True)):
        if a.shape != b.shape:
            raise ValueError(
                f"`real[{index}]` and `synthetic[{index}]` must have the same shape, got {tuple(a.shape)} and "
                f"{tuple(b.shape)}"
            )

    if distance in ("sse", "mse"):
        terms = [(a - b).pow(2).sum() for a, b in zip(real_list, syn_list, strict=True)]
        total = sum(terms[1:], terms[0])
        if distance == "mse":
            count = sum(a.numel() for a in real_list)
            total = total / max(count, 1)
        return total

    if distance == "cosine":
        a = torch.cat([t.reshape(-1) for t in real_list])
        b = torch.cat([t.reshape(-1) for t in syn_list])
        dot = (a * b).sum()
        return 1.0 - dot / (torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b) + eps)

    # "dc": layer-wise, per output channel; tensors with fewer than two dimensions contribute nothing.
    dc_terms: list[Tensor] = []
    for a, b in zip(real_list, syn_list, strict=True):
        if a.ndim < 2:
            continue
        rows_a = a.reshape(a.shape[0], -1)
        rows_b = b.reshape(b.shape[0], -1)
        dot = (rows_a * rows_b).sum(dim=1)
        norms = torch.linalg.vector_norm(rows_a, dim=1) * torch.linalg.vector_norm(rows_b, dim=1)
        dc_terms.append((1.0 - dot / (norms + eps)).sum())
    if not dc_terms:
        dtype = torch.promote_types(real_list[0].dtype, syn_list[0].dtype)
        return torch.zeros((), dtype=dtype, device=syn_list[0].device)
    return sum(dc_terms[1:], dc_terms[0])


def _check_loss(name: str, loss: Any) -> Tensor:
    loss = check_scalar_loss(name, loss)
    check_finite(name, loss)
    if not loss.requires_grad:
        raise ValueError(f"`{name}` does not require grad; it must be computed from the parameters to match")
    return loss


def first_op_without_second_derivative(gradients: Sequence[Tensor]) -> str | None:
    """The first op in the graph of ``gradients`` whose derivative PyTorch does not implement, or ``None``.

    Gradient matching back-propagates through gradients computed with ``create_graph=True``. An op whose
    backward has no derivative of its own (e.g. ``hardsigmoid``, fused ``scaled_dot_product_attention``) leaves
    a placeholder node in that graph, which fails only when a later ``backward()`` reaches it, deep inside
    PyTorch. This walks the graph once (no computation) and names such an op.

    Args:
        gradients: Tensors computed with ``create_graph=True`` (``None`` entries are skipped).

    Returns:
        The name of the op (e.g. ``"aten::hardsigmoid_backward"``), or ``None`` when the graph can be
        differentiated again.

    Examples:
        >>> import torch
        >>> x = torch.randn(3, requires_grad=True)
        >>> for act in (torch.nn.functional.hardsigmoid, torch.sigmoid):
        ...     (g,) = torch.autograd.grad(act(x).sum(), x, create_graph=True)
        ...     print(first_op_without_second_derivative([g]))
        aten::hardsigmoid_backward
        None
    """
    stack = [g.grad_fn for g in gradients if isinstance(g, Tensor) and g.grad_fn is not None]
    seen: set[Any] = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() == _NOT_IMPLEMENTED_NODE:
            try:
                node(torch.zeros(()))  # the placeholder raises PyTorch's message, which names the op
            except Exception as error:  # only its message is wanted
                found = re.search(r"aten::\w+", str(error))
                if found:
                    return found.group(0)
            return "an op without a second derivative"
        stack.extend(next_node for next_node, _ in node.next_functions)
    return None


def _match_gradients(
    real_loss: Tensor,
    synthetic_loss: Tensor,
    parameters: Sequence[Tensor],
    distance: str,
    *,
    retain_real_graph: bool,
    eps: float,
    real_name: str = "real_loss",
    synthetic_name: str = "synthetic_loss",
    parameters_name: str = "parameters",
    parameter_names: Sequence[str] | None = None,
    check_second_order: bool = True,
    model_name: str | None = None,
) -> Tensor:
    """Implementation of ``match_gradients`` with configurable names for error messages.

    ``check_second_order`` walks the synthetic gradients' graph for an op without a second derivative and raises
    a ``ValueError`` naming it and ``model_name`` (default: the model behind ``parameters_name``).
    """
    check_choice("distance", distance, GRADIENT_DISTANCES)
    eps = _check_eps(eps)
    real_loss = _check_loss(real_name, real_loss)
    synthetic_loss = _check_loss(synthetic_name, synthetic_loss)
    params = _as_tensor_list(parameters_name, parameters)

    def label(index: int) -> str:
        if parameter_names is not None:
            return f"`{parameters_name}[{index}]` ({parameter_names[index]}, shape {tuple(params[index].shape)})"
        return f"`{parameters_name}[{index}]` (shape {tuple(params[index].shape)})"

    for index, p in enumerate(params):
        if not p.requires_grad:
            raise ValueError(f"{label(index)} does not require grad; only trainable tensors can be matched")

    # Synthetic first: its graph is kept (create_graph), so freeing the real graph afterwards cannot break it
    # unless both losses share intermediate nodes (then pass retain_real_graph=True).
    syn_grads = torch.autograd.grad(synthetic_loss, params, create_graph=True, allow_unused=True)
    if check_second_order:
        op = first_op_without_second_derivative([g for g in syn_grads if g is not None])
        if op is not None:
            who = model_name if model_name is not None else f"the model behind `{parameters_name}`"
            raise ValueError(
                f"{who} cannot be used for gradient matching: the gradient of `{synthetic_name}` has no second "
                f"derivative through {op} (PyTorch implements no derivative for it), so back-propagating the "
                "distance would fail inside PyTorch; replace that op with one that has a double backward (e.g. "
                "nn.Hardsigmoid / nn.Hardswish by nn.Sigmoid / nn.SiLU), and for timm attention call "
                "hmdc_modules.adapters.disable_fused_attention(model) (auto_adapter does it)"
            )
    real_grads = torch.autograd.grad(real_loss, params, retain_graph=retain_real_graph, allow_unused=True)

    kept_real: list[Tensor] = []
    kept_syn: list[Tensor] = []
    for index, (g_real, g_syn) in enumerate(zip(real_grads, syn_grads, strict=True)):
        if g_real is None and g_syn is None:
            continue
        if g_real is None or g_syn is None:
            reached, missed = (synthetic_name, real_name) if g_real is None else (real_name, synthetic_name)
            raise ValueError(
                f"{label(index)} is reached by `{reached}` but not by `{missed}`; the two losses must depend on the "
                f"same parameters"
            )
        kept_real.append(g_real.detach())
        kept_syn.append(g_syn)
    if not kept_real:
        raise ValueError(f"none of the {len(params)} tensors in `{parameters_name}` is reached by either loss")
    return gradient_distance(kept_real, kept_syn, distance, eps=eps)


def match_gradients(
    real_loss: Tensor,
    synthetic_loss: Tensor,
    parameters: Sequence[Tensor],
    distance: str = "sse",
    *,
    retain_real_graph: bool = False,
    eps: float = 1e-6,
    check_second_order: bool = True,
) -> Tensor:
    r"""Gradient-matching loss between a real and a synthetic loss over the same parameters.

    Computes $g^{\mathrm{real}} = \nabla_\theta \mathcal{L}_{\mathrm{real}}$ as a constant (no graph) and
    $g^{\mathrm{syn}} = \nabla_\theta \mathcal{L}_{\mathrm{syn}}$ with its graph, then returns
    $D(g^{\mathrm{real}}, g^{\mathrm{syn}})$ from
    [`gradient_distance`][hmdc_modules.functional.matching.gradient_distance]. The result is differentiable with
    respect to whatever produced ``synthetic_loss`` (the synthetic images, and also the parameters themselves, so
    a ``backward()`` writes into the parameters' ``.grad``; zero it before a model update). Nothing flows back to
    the real batch.

    Parameters reached by neither loss are skipped; a parameter reached by only one of them is an error.

    Args:
        real_loss: Finite scalar loss of the real batch.
        synthetic_loss: Finite scalar loss of the synthetic batch.
        parameters: The tensors (requiring grad) whose gradients are matched.
        distance: One of ``"sse"`` (default, the HMDC reference), ``"mse"``, ``"cosine"``, ``"dc"``.
        retain_real_graph: Keep the graph of ``real_loss`` so that further losses computed from the same real
            forward pass can be matched afterwards. Also needed when both losses share intermediate nodes.
        eps: Constant of the ``"cosine"`` and ``"dc"`` distances.
        check_second_order: Walk the synthetic gradient's graph (no computation) for an op without a second
            derivative (see ``first_op_without_second_derivative``) and raise at once instead of failing inside
            PyTorch at ``backward()``.

    Returns:
        The scalar distance.

    Raises:
        TypeError: If a loss is not a floating scalar tensor or ``parameters`` is not a list/tuple of tensors.
        ValueError: If a loss is not a scalar, not finite or does not require grad; if ``distance`` is unknown; if
            ``parameters`` is empty, holds a tensor that does not require grad, or holds a tensor reached by only
            one loss (named by index); if no tensor is reached by either loss; or (with ``check_second_order``)
            if the synthetic gradient has no second derivative (the message names the op).

    Shape:
        - real_loss, synthetic_loss: $()$
        - output: $()$

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Linear(3, 2)
        >>> x = torch.randn(4, 3)
        >>> y = torch.tensor([0, 1, 0, 1])
        >>> loss = soft_cross_entropy(net(x), y)
        >>> same = match_gradients(loss, soft_cross_entropy(net(x), y), list(net.parameters()))
        >>> float(same.detach())
        0.0

    Note:
        Runs eagerly: ``torch.compile`` cannot trace autograd through ``torch.autograd.grad``.
    """
    return _match_gradients(
        real_loss,
        synthetic_loss,
        parameters,
        distance,
        retain_real_graph=bool(retain_real_graph),
        eps=eps,
        check_second_order=bool(check_second_order),
    )

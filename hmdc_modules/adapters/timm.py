"""Adapter for timm models, through timm's own ``forward_intermediates`` / ``forward_head`` / ``feature_info``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from hmdc_modules._validation import check_choice, check_positive_int, describe
from hmdc_modules.adapters.base import FeatureAdapter, _check_module
from hmdc_modules.adapters.layout import SEMANTICS, semantic_vector
from hmdc_modules.features import FeatureMap

__all__ = ["TimmAdapter", "disable_fused_attention", "fused_attention", "has_timm_interface"]


def disable_fused_attention(model: nn.Module) -> int:
    r"""Make every timm attention block of ``model`` twice differentiable: switch it to explicit attention.

    Gradient matching back-propagates through a gradient (a double backward). PyTorch's fused
    ``scaled_dot_product_attention`` kernels (flash and memory-efficient, on CPU and GPU) implement no derivative
    of their own backward, so a ViT used for matching must compute $\mathrm{softmax}(QK^\top/\sqrt{d})V$
    explicitly. timm exposes that choice as the boolean ``fused_attn`` attribute of its attention modules; this
    sets it to ``False`` wherever it exists. The outputs are the same up to rounding; the explicit path is slower
    and holds the attention matrix in memory. [`auto_adapter`][hmdc_modules.adapters.auto_adapter] calls it for
    every timm model.

    Args:
        model: Any module; its submodules with a boolean ``fused_attn`` attribute are switched.

    Returns:
        The number of attention modules switched (0 for a model without any).

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.

    Examples:
        >>> import timm
        >>> vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=4)
        >>> disable_fused_attention(vit) == len(vit.blocks)
        True
        >>> any(getattr(m, "fused_attn", False) for m in vit.modules())
        False
    """
    _check_module("model", model)
    count = 0
    for module in model.modules():
        if isinstance(getattr(module, "fused_attn", None), bool):
            module.fused_attn = False
            count += 1
    return count


@contextlib.contextmanager
def fused_attention(*modules: nn.Module) -> Iterator[int]:
    r"""Let the explicit attention blocks of ``modules`` use PyTorch's fused kernels inside the context.

    The undo of [`disable_fused_attention`][hmdc_modules.adapters.timm.disable_fused_attention] for the passes that
    differentiate once: a model's own training step, a forward pass without grad. Every timm attention module whose
    ``fused_attn`` is ``False`` computes ``scaled_dot_product_attention`` inside the context and is switched back
    on exit (also when the body raises); modules that were already fused are left alone. The flag is read during
    the forward pass, so a graph built inside the context can be back-propagated once after it; it cannot be
    differentiated twice (``create_graph=True``), which is what the explicit path is for. Outputs agree with the
    explicit path up to rounding. (On our 2-core CPU, a ViT-Tiny training step at patch 4 on 32x32, batch 64, took
    0.88x the explicit path's time; see docs/performance.md.)

    Args:
        *modules: Any modules (models, adapters, an objective); their submodules are searched.

    Yields:
        The number of attention modules switched for the context.

    Raises:
        TypeError: If an argument is not an ``nn.Module``.

    Examples:
        >>> import timm, torch
        >>> vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=4)
        >>> n = disable_fused_attention(vit)
        >>> with fused_attention(vit) as switched:
        ...     loss = vit(torch.randn(2, 3, 32, 32)).sum()
        >>> switched == n, any(getattr(m, "fused_attn", False) for m in vit.modules())
        (True, False)
        >>> loss.backward()  # once: fine
    """
    for module in modules:
        _check_module("modules", module)
    switched = [m for module in modules for m in module.modules() if getattr(m, "fused_attn", None) is False]
    switched = list({id(m): m for m in switched}.values())  # a module reachable twice is switched once
    for m in switched:
        m.fused_attn = True
    try:
        yield len(switched)
    finally:
        for m in switched:
            m.fused_attn = False


def has_timm_interface(model: nn.Module) -> bool:
    """Whether ``model`` offers timm's feature interface: ``forward_intermediates``, ``forward_head`` and a
    ``feature_info`` list of dicts with ``"module"`` and ``"num_chs"`` (judged by what it exposes, not its class).

    Args:
        model: Any module.

    Returns:
        ``True`` when [`TimmAdapter`][hmdc_modules.adapters.timm.TimmAdapter] can wrap it.

    Examples:
        >>> import timm
        >>> has_timm_interface(timm.create_model("test_resnet", num_classes=10)), has_timm_interface(nn.Linear(2, 2))
        (True, False)
    """
    if not all(callable(getattr(model, attr, None)) for attr in ("forward_intermediates", "forward_head")):
        return False
    info = getattr(model, "feature_info", None)
    if isinstance(info, str | bytes | Mapping) or not isinstance(info, Iterable):
        return False
    entries = list(info)
    return bool(entries) and all(
        isinstance(entry, Mapping) and "module" in entry and "num_chs" in entry for entry in entries
    )


def _resolve_indices(indices: Any, count: int) -> tuple[int, ...]:
    """timm's index convention: ``None`` all, an int $n$ the last $n$, a sequence those (negatives from the end)."""
    if indices is None:
        return tuple(range(count))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 1 <= indices <= count:
            raise ValueError(f"`indices` as an int takes the last n of {count} feature levels, got n={indices}")
        return tuple(range(count - indices, count))
    if isinstance(indices, str) or not isinstance(indices, Sequence):
        raise TypeError(f"`indices` must be None, an int or a sequence of ints, got {describe(indices)}")
    if len(indices) == 0:
        raise ValueError("`indices` must select at least one feature level, got an empty sequence")
    resolved = []
    for i, index in enumerate(indices):
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"`indices[{i}]` must be an int, got {describe(index)}")
        if not -count <= index < count:
            raise ValueError(f"`indices[{i}]` must be in [{-count}, {count}) for {count} feature levels, got {index}")
        resolved.append(index % count)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"`indices` must not select a feature level twice, got {list(indices)} of {count} levels")
    return tuple(sorted(resolved))


def _feature_info(model: nn.Module) -> list[Mapping[str, Any]]:
    for attr in ("forward_intermediates", "forward_head", "feature_info"):
        if not hasattr(model, attr):
            raise TypeError(
                f"`model` must be a timm model with `forward_intermediates`, `forward_head` and `feature_info`; "
                f"{type(model).__name__} has no `{attr}` (use HookAdapter with named layers instead)"
            )
    info = list(model.feature_info)
    for i, entry in enumerate(info):
        if not isinstance(entry, Mapping) or "module" not in entry or "num_chs" not in entry:
            raise TypeError(
                f"`model.feature_info[{i}]` must be a dict with 'module' and 'num_chs', got {describe(entry)}"
            )
    if not info:
        raise ValueError(f"`model.feature_info` of {type(model).__name__} is empty; there is no layer to tap")
    return info


class TimmAdapter(FeatureAdapter):
    r"""Adapter for timm models: one ``forward_intermediates`` call gives the tapped features and the logits.

    The adapter calls ``model.forward_intermediates(x, indices=..., output_fmt="NCHW")`` once (asking for the
    prefix tokens too when the model has any) and ``model.forward_head`` on its final features, so the logits
    equal ``model(x)``. The levels are those of ``model.feature_info``: every block of a ViT (outputs after the
    residual, before the final norm), every stage of a CNN (the stem included where timm lists it).

    For a ViT, each level is a patch-token map $[B, D, g_h, g_w]$ (timm reshapes the patch tokens row-major,
    non-square grids included) and $P$ prefix tokens $[B, P, D]$; ``semantic`` picks the semantic vector (see
    [`semantic_vector`][hmdc_modules.adapters.layout.semantic_vector]). For a CNN it is the mean of the map. Maps
    that come back channels-last (last dimension equal to ``feature_info``'s ``num_chs``, second one not) are
    permuted to NCHW.

    The adapter leaves timm's fused attention as it is; gradient matching needs it off (see
    [`disable_fused_attention`][hmdc_modules.adapters.timm.disable_fused_attention], which
    [`auto_adapter`][hmdc_modules.adapters.auto_adapter] applies).

    Args:
        model: A timm classifier (e.g. ``timm.create_model("vit_tiny_patch16_224", pretrained=False)``).
        indices: ``None`` (every level of ``feature_info``), an int $n$ (the last $n$ levels) or a sequence of
            level indices (negative ones count from the end); returned shallow to deep whatever their order.
        semantic: ``"auto"`` (CLS if the model has prefix tokens, else the mean), ``"cls"``, ``"prefix_mean"``
            or ``"mean"``.
        input_size: Resize inputs to this size first (bilinear, ``align_corners=True``); ``None`` keeps them (a
            ViT built with ``img_size=32`` takes 32x32 images as they are).

    Raises:
        TypeError: If ``model`` lacks ``forward_intermediates``/``forward_head``/``feature_info``, or an
            argument has the wrong type.
        ValueError: If ``indices`` is empty, out of range or repeats a level, if ``semantic`` is unknown, or if
            it asks for prefix tokens of a model without any.

    Shape:
        - Input: $(B, C, H, W)$.
        - Output: logits $(B, K)$; feature $l$: semantic $(B, C_l)$, spatial $(B, C_l, H_l, W_l)$.

    Examples:
        >>> import timm, torch
        >>> vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=4)
        >>> adapter = TimmAdapter(vit, indices=2)
        >>> adapter.layer_names
        ('blocks.4', 'blocks.5')
        >>> out = adapter(torch.zeros(2, 3, 32, 32))
        >>> out.logits.shape, out.features[-1].semantic.shape, out.features[-1].spatial.shape
        (torch.Size([2, 10]), torch.Size([2, 64]), torch.Size([2, 64, 8, 8]))
    """

    def __init__(
        self,
        model: nn.Module,
        indices: int | Sequence[int] | None = None,
        *,
        semantic: str = "auto",
        input_size: int | tuple[int, int] | None = None,
    ) -> None:
        info = _feature_info(_check_module("model", model))
        super().__init__(model, input_size=input_size)
        self.indices = _resolve_indices(indices, len(info))
        self._names = tuple(str(info[i]["module"]) for i in self.indices)
        self._channels = tuple(int(info[i]["num_chs"]) for i in self.indices)
        self.num_prefix_tokens = check_positive_int(
            "model.num_prefix_tokens", getattr(model, "num_prefix_tokens", 0) or 0, minimum=0
        )
        self.semantic = check_choice("semantic", semantic, SEMANTICS)
        if self.num_prefix_tokens == 0 and semantic in ("cls", "prefix_mean"):
            raise ValueError(
                f"`semantic`={semantic!r} needs prefix tokens but {type(model).__name__} has none "
                "(num_prefix_tokens == 0); use semantic='mean' or 'auto'"
            )

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The ``feature_info`` module names of the selected levels, shallow to deep."""
        return self._names

    def _forward_features(self, x: Tensor) -> tuple[Tensor, list[FeatureMap]]:
        kwargs: dict[str, Any] = {"indices": list(self.indices), "output_fmt": "NCHW"}
        if self.num_prefix_tokens > 0:
            kwargs["return_prefix_tokens"] = True
        final, intermediates = self.model.forward_intermediates(x, **kwargs)
        logits = self.model.forward_head(final)
        if len(intermediates) != len(self._names):
            raise RuntimeError(
                f"{type(self.model).__name__}.forward_intermediates returned {len(intermediates)} levels for "
                f"indices {list(self.indices)}, expected {len(self._names)} (its feature_info and "
                "forward_intermediates disagree); use HookAdapter with named layers instead"
            )
        features = []
        for name, channels, level in zip(self._names, self._channels, intermediates, strict=True):
            spatial, prefix = level if isinstance(level, tuple | list) else (level, None)
            if spatial.ndim != 4:
                raise RuntimeError(
                    f"timm returned level {name!r} with shape {tuple(spatial.shape)}, expected an NCHW map"
                )
            if spatial.shape[1] != channels and spatial.shape[-1] == channels:
                spatial = spatial.permute(0, 3, 1, 2)
            features.append(FeatureMap(semantic_vector(spatial, prefix, self.semantic, name=name), spatial))
        return logits, features

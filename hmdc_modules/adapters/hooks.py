"""Tapping the outputs of named submodules of any ``nn.Module`` with forward hooks, during one forward pass."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from hmdc_modules._validation import check_choice, check_positive_int, describe
from hmdc_modules.adapters.base import FeatureAdapter
from hmdc_modules.adapters.layout import LAYOUTS, SEMANTICS, _size_pair, to_feature_map
from hmdc_modules.features import FeatureMap, logits_of

__all__ = ["HookAdapter", "default_output_fn"]

_MAX_LISTED = 20
_AUTO_LAYOUT = {4: "nchw", 3: "nlc"}


default_output_fn = logits_of
"""The default ``output_fn`` of hook-based adapters: [`logits_of`][hmdc_modules.features.logits_of]."""


def _first_tensor(output: Any, name: str) -> Tensor:
    """A hooked module's output: the tensor itself, or the first tensor of a tuple/list."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list):
        for item in output:
            if isinstance(item, Tensor):
                return item
    raise TypeError(f"layer {name!r} returned {describe(output)}; expected a Tensor or a tuple holding one")


def _check_layers(model: nn.Module, layers: Any) -> tuple[str, ...]:
    """Validate ``layers`` against the names of ``model``'s submodules."""
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError(
            f"`layers` must be a sequence of submodule names (e.g. ['layer1', 'layer2']), got {describe(layers)}"
        )
    if len(layers) == 0:
        raise ValueError("`layers` must name at least one submodule, got an empty sequence")
    for i, name in enumerate(layers):
        if not isinstance(name, str):
            raise TypeError(f"`layers[{i}]` must be a submodule name (str), got {describe(name)}")
    duplicates = sorted({name for name in layers if layers.count(name) > 1})
    if duplicates:
        raise ValueError(f"`layers` must not repeat a name, got {duplicates} more than once in {list(layers)}")
    valid = [name for name, _ in model.named_modules(remove_duplicate=False) if name]
    known = set(valid)
    unknown = [name for name in layers if name not in known]
    if unknown:
        listed = ", ".join(repr(name) for name in valid[:_MAX_LISTED])
        more = f", ... ({len(valid) - _MAX_LISTED} more, {len(valid)} in all)" if len(valid) > _MAX_LISTED else ""
        close = difflib.get_close_matches(unknown[0], valid, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        listing = f"valid names: {listed}{more}" if valid else "it has no submodules"
        raise ValueError(f"`layers` names unknown submodule(s) {unknown} of {type(model).__name__}{hint}; {listing}")
    return tuple(layers)


def _recorder(records: dict[str, Any], name: str) -> Callable[[nn.Module, Any, Any], None]:
    """A forward hook storing the module's output in ``records[name]`` (the last call wins)."""

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        records[name] = output

    return hook


class HookAdapter(FeatureAdapter):
    r"""Adapter for any ``nn.Module``: taps the outputs of named submodules with forward hooks.

    The hooks are registered for the duration of each adapter call only, so they record nothing when the model
    is run directly, and the adapter deep-copies, pickles and saves like any module (its ``state_dict`` is the
    model's under ``model.``). A submodule that returns a tuple contributes its first tensor; one that runs
    several times in a forward pass contributes its last output.

    Each output is decomposed by [`to_feature_map`][hmdc_modules.adapters.layout.to_feature_map] with
    ``layout``: ``"auto"`` reads 4-D outputs as NCHW maps and 3-D outputs as NLC tokens.

    Args:
        model: Any network.
        layers: Names of the submodules to tap (as in ``model.named_modules()``), listed shallow to deep; the
            features come back in this order.
        layout: ``"auto"``, ``"nchw"``, ``"nhwc"`` or ``"nlc"``.
        num_prefix_tokens: Leading non-patch tokens (CLS, registers) of NLC outputs.
        grid_size: Patch grid $(g_h, g_w)$ of NLC outputs, needed when their patch count is not a square.
        semantic: ``"auto"``, ``"cls"``, ``"prefix_mean"`` or ``"mean"``, see
            [`semantic_vector`][hmdc_modules.adapters.layout.semantic_vector].
        input_size: Resize inputs to this size first (bilinear, ``align_corners=True``); ``None`` keeps them.
        output_fn: Maps the model's output to its logits; defaults to
            [`logits_of`][hmdc_modules.features.logits_of].

    Raises:
        TypeError: If ``model`` is not a module, ``layers`` is not a sequence of str, ``output_fn`` is not
            callable, or a size has the wrong type.
        ValueError: If ``layers`` is empty, repeats a name or names an unknown submodule (the message lists the
            valid names), if ``layout``/``semantic`` is unknown, or if ``semantic`` asks for prefix tokens of a
            map layout.

    Shape:
        - Input: $(B, C, H, W)$.
        - Output: logits $(B, K)$; feature $l$: semantic $(B, C_l)$, spatial $(B, C_l, H_l, W_l)$.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(8, 10))
        >>> adapter = HookAdapter(net, ["1"])
        >>> out = adapter(torch.randn(2, 3, 16, 16))
        >>> out.logits.shape, out.features[0].spatial.shape
        (torch.Size([2, 10]), torch.Size([2, 8, 16, 16]))
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        layout: str = "auto",
        num_prefix_tokens: int = 0,
        grid_size: int | tuple[int, int] | None = None,
        semantic: str = "auto",
        input_size: int | tuple[int, int] | None = None,
        output_fn: Callable[[Any], Tensor] | None = None,
    ) -> None:
        super().__init__(model, input_size=input_size)
        self._layers = _check_layers(self.model, layers)
        self.layout = check_choice("layout", layout, ("auto", *LAYOUTS))
        self.num_prefix_tokens = check_positive_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        self.grid_size = None if grid_size is None else _size_pair("grid_size", grid_size)
        self.semantic = check_choice("semantic", semantic, SEMANTICS)
        if layout in ("nchw", "nhwc") and semantic in ("cls", "prefix_mean"):
            raise ValueError(
                f"`semantic`={semantic!r} needs prefix tokens, which `layout`={layout!r} maps do not have; "
                "use semantic='mean' or 'auto'"
            )
        if output_fn is not None and not callable(output_fn):
            raise TypeError(f"`output_fn` must be callable or None, got {describe(output_fn)}")
        self.output_fn: Callable[[Any], Tensor] = default_output_fn if output_fn is None else output_fn

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the tapped submodules, in the order the features are returned."""
        return self._layers

    def _forward_features(self, x: Tensor) -> tuple[Tensor, list[FeatureMap]]:
        records: dict[str, Any] = {}
        handles: list[RemovableHandle] = []
        try:
            for name in self._layers:
                handles.append(self.model.get_submodule(name).register_forward_hook(_recorder(records, name)))
            output = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        logits = self.output_fn(output)
        features = []
        for name in self._layers:
            if name not in records:
                raise RuntimeError(
                    f"layer {name!r} did not run during the forward pass of {type(self.model).__name__}; "
                    "tap a submodule that the model's forward calls"
                )
            t = _first_tensor(records[name], name)
            layout = _AUTO_LAYOUT.get(t.ndim, "nchw") if self.layout == "auto" else self.layout
            features.append(
                to_feature_map(
                    t,
                    layout,
                    num_prefix_tokens=self.num_prefix_tokens if layout == "nlc" else 0,
                    grid_size=self.grid_size,
                    semantic=self.semantic,
                    name=name,
                )
            )
        return logits, features

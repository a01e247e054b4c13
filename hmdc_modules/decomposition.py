r"""Spatial-Semantic Decomposition (SSD): bring heterogeneous models' features into one comparable space.

Each tapped layer of each model arrives as a [`FeatureMap`][hmdc_modules.features.FeatureMap] (a semantic vector
and a spatial map). The decomposer resizes every spatial map to a common side $s$, projects the semantic vector
and every spatial position of a layer with that layer's own ``Linear(C_l -> d)`` into a common dimension $d$,
and stacks the layers into $F_m \in \mathbb{R}^{B \times L_m \times (1 + s^2) \times d}$. For every pair of
models a learnable layer-matching matrix mixes the model with more layers onto the layer axis of the model with
fewer layers, so that the pair can be compared element by element (see
[`MutualDistillationLoss`][hmdc_modules.distillation.MutualDistillationLoss]).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmdc_modules._validation import check_all_finite, check_choice, check_positive_int, check_tensor, describe
from hmdc_modules.features import AdapterOutput, FeatureMap, FeatureSpec

__all__ = ["SpatialSemanticDecomposer"]

_SOFTMAX_AXES: tuple[str, ...] = ("target", "source")
_PAIR_MODES: tuple[str, ...] = ("all", "chain")


def _check_image_size(image_size: Any) -> tuple[int, int]:
    """Validate ``image_size`` (an int or an ``(height, width)`` pair of positive ints)."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return (check_positive_int("image_size", image_size),) * 2
    if isinstance(image_size, tuple | list):
        if len(image_size) != 2:
            raise ValueError(f"`image_size` must be an int or a (height, width) pair, got {len(image_size)} values")
        height = check_positive_int("image_size[0]", image_size[0])
        width = check_positive_int("image_size[1]", image_size[1])
        return (height, width)
    raise TypeError(f"`image_size` must be an int or a (height, width) pair of ints, got {describe(image_size)}")


def _as_list(name: str, value: Any, what: str) -> list[Any]:
    """Turn an iterable (not a string, tensor or mapping) into a list, else raise ``TypeError``."""
    if isinstance(value, str | bytes | Tensor | dict) or not isinstance(value, Iterable):
        raise TypeError(f"`{name}` must be a sequence of {what}, got {describe(value)}")
    return list(value)


def _check_specs(name: str, specs: Any) -> tuple[FeatureSpec, ...]:
    """Validate one model's sequence of ``FeatureSpec``."""
    items = _as_list(name, specs, "FeatureSpec")
    if not items:
        raise ValueError(f"`{name}` must describe at least one tapped layer, got an empty sequence of FeatureSpec")
    for index, spec in enumerate(items):
        if not isinstance(spec, FeatureSpec):
            raise TypeError(f"`{name}[{index}]` must be a FeatureSpec, got {describe(spec)}")
        for field in ("channels", "height", "width"):
            check_positive_int(f"{name}[{index}].{field}", getattr(spec, field))
    return tuple(items)


def _resolve_specs(models: Any, image_size: int | tuple[int, int]) -> tuple[tuple[FeatureSpec, ...], ...]:
    """Collect each model's feature specs, calling ``feature_specs(image_size)`` on adapter-like objects."""
    if callable(getattr(models, "feature_specs", None)):
        raise TypeError(
            f"`models` must be a sequence of at least 2 models (or of their FeatureSpec sequences), got a single "
            f"{type(models).__name__}"
        )
    items = _as_list("models", models, "adapters (objects with `feature_specs`) or FeatureSpec sequences")
    if len(items) < 2:
        raise ValueError(f"`models` must hold at least 2 models to decompose and align, got {len(items)}")
    resolved = []
    for m, item in enumerate(items):
        getter = getattr(item, "feature_specs", None)
        if callable(getter):
            resolved.append(_check_specs(f"models[{m}].feature_specs(image_size)", getter(image_size)))
        else:
            resolved.append(_check_specs(f"models[{m}]", item))
    return tuple(resolved)


def _resolve_pairs(pairs: Any, num_models: int) -> tuple[tuple[int, int], ...]:
    """Expand ``"all"``/``"chain"`` or validate an explicit list of ``(i, j)`` model pairs."""
    if isinstance(pairs, str):
        check_choice("pairs", pairs, _PAIR_MODES)
        if pairs == "all":
            return tuple(itertools.combinations(range(num_models), 2))
        return tuple((k, k + 1) for k in range(num_models - 1))
    items = _as_list("pairs", pairs, "(i, j) model-index pairs, or 'all' / 'chain'")
    if not items:
        raise ValueError("`pairs` must hold at least one (i, j) pair, got an empty sequence")
    result: list[tuple[int, int]] = []
    seen: set[frozenset[int]] = set()
    for k, pair in enumerate(items):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValueError(f"`pairs[{k}]` must be an (i, j) pair of model indices, got {pair!r}")
        i, j = pair
        for index in (i, j):
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"`pairs[{k}]` must hold int model indices, got {describe(index)}")
            if not 0 <= index < num_models:
                raise ValueError(f"`pairs[{k}]` = {pair!r} holds a model index outside [0, {num_models - 1}]")
        if i == j:
            raise ValueError(f"`pairs[{k}]` = {pair!r} pairs a model with itself; expected two different models")
        key = frozenset((i, j))
        if key in seen:
            raise ValueError(f"`pairs[{k}]` = {pair!r} repeats a pair of models already listed")
        seen.add(key)
        result.append((int(i), int(j)))
    return tuple(result)


class SpatialSemanticDecomposer(nn.Module):
    r"""Project the tapped layers of $N \ge 2$ heterogeneous models into one space and align them pairwise.

    **Common size.** Sizes are fixed once, at construction, from each model's
    ``feature_specs(image_size)`` (or from the given specs): the common side $s$ is the smallest spatial side over
    all tapped layers of all models (for a non-square map, the smaller of height and width) and the common
    dimension $d$ is the smallest channel count; ``side`` and ``dim`` override them.

    **Projection.** Model $m$'s layer $l$ (semantic $z \in \mathbb{R}^{B \times C_l}$, spatial map
    $X \in \mathbb{R}^{B \times C_l \times H \times W}$) owns a ``Linear`` $P_{m,l}(x) = W_{m,l} x + b_{m,l}$ with
    $W_{m,l} \in \mathbb{R}^{d \times C_l}$. The map is resized bilinearly to $s \times s$ (``align_corners=True``,
    no antialias; skipped when already $s \times s$), its positions are flattened row-major, and the token
    sequence is $[P_{m,l}(z), P_{m,l}(X_{:,:,0,0}), P_{m,l}(X_{:,:,0,1}), \dots, P_{m,l}(X_{:,:,s-1,s-1})]$,
    semantic first. Stacking the layers gives $F_m \in \mathbb{R}^{B \times L_m \times (1 + s^2) \times d}$.

    **Layer matching.** Each pair $(i, j)$ owns a parameter $M \in \mathbb{R}^{L_i \times L_j}$, zero at
    initialisation. The model with more layers (the *source*; model $i$ when $L_i = L_j$) is mixed onto the layer
    axis of the other (the *target*), which is returned unchanged. With weights $P$ = ``mixing_weights(k)`` of
    the shape of $M$, writing $P_{t,s}$ for the entry that links target layer $t$ and source layer $s$,

    $$F'_{\mathrm{src}}[:, t] = \sum_{s} P_{t,s}\, F_{\mathrm{src}}[:, s].$$

    With ``softmax_axis="target"`` (the reference) the softmax of $M$ runs over the target axis, so each source
    layer distributes weights summing to one over the target layers; at initialisation each target is
    $\frac{1}{L_{\mathrm{tgt}}}\sum_s F_{\mathrm{src}}[:, s]$, i.e. $L_{\mathrm{src}}/L_{\mathrm{tgt}}$ times the
    mean source layer. With ``softmax_axis="source"`` the softmax runs over the source axis, so each target layer
    is a convex combination of the source layers (their mean at initialisation).

    Args:
        models: At least two models, each either an object with a method ``feature_specs(image_size)`` returning
            a sequence of [`FeatureSpec`][hmdc_modules.features.FeatureSpec] (an adapter), or such a sequence
            itself. The objects are only queried, not stored.
        image_size: Input size passed to ``feature_specs``: an int or ``(height, width)``.
        side: Common spatial side $s$; default: smallest tapped side.
        dim: Common dimension $d$; default: smallest tapped channel count.
        softmax_axis: ``"target"`` (default, the reference) or ``"source"``, see above.
        pairs: ``"all"`` (default; every $(i, j)$ with $i < j$), ``"chain"`` ($(0, 1), (1, 2), \dots$) or an
            explicit sequence of distinct ``(i, j)`` pairs of different model indices.

    Attributes:
        projections: ``projections[m][l]`` is the ``nn.Linear(C_l, d)`` of model ``m``'s layer ``l``.
        layer_matching: ``layer_matching[k]`` is the $L_i \times L_j$ matrix $M$ of pair ``pairs[k] = (i, j)``.

    Raises:
        TypeError: If ``models``, a model, a spec, ``image_size``, ``side``, ``dim`` or a pair index has the wrong
            type.
        ValueError: If fewer than 2 models are given, a model has no tapped layer, a size is not positive, or
            ``softmax_axis`` or ``pairs`` is not an accepted value.

    Shape:
        - features (``forward``): $N$ sequences; model $m$'s holds $L_m$ feature maps with semantic $(B, C_l)$ and
          spatial $(B, C_l, H_l, W_l)$ (any $H_l, W_l$; only the channels must match the specs).
        - ``project`` output: $(B, L_m, 1 + s^2, d)$.
        - ``forward`` output: one pair per entry of ``pairs``, both tensors of shape
          $(B, \min(L_i, L_j), 1 + s^2, d)$.

    Examples:
        >>> import torch
        >>> from hmdc_modules.features import FeatureMap, FeatureSpec
        >>> cnn = [FeatureSpec("pool1", 8, 16, 16), FeatureSpec("pool2", 8, 8, 8)]
        >>> vit = [FeatureSpec(f"block{k}", 12, 4, 4) for k in range(3)]
        >>> decomposer = SpatialSemanticDecomposer([cnn, vit])
        >>> decomposer.side, decomposer.dim, decomposer.pairs
        (4, 8, ((0, 1),))
        >>> f_cnn = [FeatureMap(torch.randn(2, 8), torch.randn(2, 8, h, h)) for h in (16, 8)]
        >>> f_vit = [FeatureMap(torch.randn(2, 12), torch.randn(2, 12, 4, 4)) for _ in range(3)]
        >>> [(a, b)] = decomposer([f_cnn, f_vit])
        >>> a.shape, b.shape
        (torch.Size([2, 2, 17, 8]), torch.Size([2, 2, 17, 8]))
    """

    def __init__(
        self,
        models: Sequence[Any] | Sequence[Sequence[FeatureSpec]],
        image_size: int | tuple[int, int] = 32,
        *,
        side: int | None = None,
        dim: int | None = None,
        softmax_axis: Literal["target", "source"] = "target",
        pairs: Literal["all", "chain"] | Sequence[tuple[int, int]] = "all",
    ) -> None:
        super().__init__()
        self._image_size = _check_image_size(image_size)
        self._specs = _resolve_specs(models, image_size)
        all_specs = [spec for model_specs in self._specs for spec in model_specs]
        default_side = min(min(spec.height, spec.width) for spec in all_specs)
        default_dim = min(spec.channels for spec in all_specs)
        self._side = default_side if side is None else check_positive_int("side", side)
        self._dim = default_dim if dim is None else check_positive_int("dim", dim)
        self._softmax_axis = check_choice("softmax_axis", softmax_axis, _SOFTMAX_AXES)
        self._pairs = _resolve_pairs(pairs, len(self._specs))
        self.projections = nn.ModuleList(
            nn.ModuleList(nn.Linear(spec.channels, self._dim) for spec in model_specs) for model_specs in self._specs
        )
        self.layer_matching = nn.ParameterList(
            nn.Parameter(torch.zeros(len(self._specs[i]), len(self._specs[j]))) for i, j in self._pairs
        )

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def side(self) -> int:
        """Common spatial side $s$ every map is resized to."""
        return self._side

    @property
    def dim(self) -> int:
        """Common feature dimension $d$ every layer is projected to."""
        return self._dim

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """The aligned model pairs ``(i, j)``, in the order of ``forward``'s output and of ``layer_matching``."""
        return self._pairs

    @property
    def num_models(self) -> int:
        """Number of models $N$."""
        return len(self._specs)

    @property
    def num_layers(self) -> tuple[int, ...]:
        """Number of tapped layers $L_m$ of each model."""
        return tuple(len(model_specs) for model_specs in self._specs)

    @property
    def num_tokens(self) -> int:
        """Tokens per layer, $1 + s^2$ (the semantic token first)."""
        return 1 + self._side * self._side

    @property
    def specs(self) -> tuple[tuple[FeatureSpec, ...], ...]:
        """The feature specs of each model, as resolved at construction."""
        return self._specs

    @property
    def softmax_axis(self) -> str:
        """``"target"`` or ``"source"``: the axis of $M$ the softmax normalises over."""
        return self._softmax_axis

    @property
    def image_size(self) -> tuple[int, int]:
        """The ``(height, width)`` the sizes were inferred for."""
        return self._image_size

    # ------------------------------------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """Re-draw every projection with PyTorch's default ``Linear`` init and set every matching matrix to zero.

        The reference does this at every outer iteration, together with the re-initialisation of the models. The
        parameter objects are kept (re-initialised in place), so existing optimizers still point at them; their
        state (e.g. Adam moments) is not reset here.
        """
        for model_projections in self.projections:
            for projection in model_projections:
                projection.reset_parameters()
        with torch.no_grad():
            for matrix in self.layer_matching:
                matrix.zero_()

    def mixing_weights(self, pair_index: int) -> Tensor:
        r"""Softmax-normalised layer-matching weights of pair ``pairs[pair_index] = (i, j)``.

        Args:
            pair_index: Index into ``pairs``.

        Returns:
            $P$ of the same shape as $M$, $(L_i, L_j)$: entry $[a, b]$ links model $i$'s layer $a$ and model $j$'s
            layer $b$. It sums to one over the target (fewer-layer; $j$ on ties) axis for
            ``softmax_axis="target"``, over the source axis for ``"source"``. Differentiable w.r.t. $M$.

        Raises:
            TypeError: If ``pair_index`` is not an int.
            ValueError: If ``pair_index`` is outside ``[0, len(pairs) - 1]``.
        """
        k = self._check_index("pair_index", pair_index, len(self._pairs))
        i, j = self._pairs[k]
        target_dim = 0 if len(self._specs[i]) < len(self._specs[j]) else 1
        dim = target_dim if self._softmax_axis == "target" else 1 - target_dim
        return torch.softmax(self.layer_matching[k], dim=dim)

    # ------------------------------------------------------------------------------------------------ compute
    def project(self, model_index: int, features: Sequence[FeatureMap] | AdapterOutput) -> Tensor:
        """Resize, project and stack the tapped layers of one model.

        Args:
            model_index: Which model (index into the construction-time ``models``).
            features: That model's $L_m$ feature maps, shallow to deep (or its ``AdapterOutput``).

        Returns:
            $F_m$ of shape $(B, L_m, 1 + s^2, d)$; token 0 is the semantic part, tokens $1..s^2$ the spatial
            positions in row-major order.

        Raises:
            TypeError: If ``model_index`` is not an int, or ``features`` or a tensor in it has the wrong type.
            ValueError: If ``model_index`` is out of range, the layer count or a channel count differs from the
                specs, a tensor has the wrong rank, batch sizes differ, or a tensor holds NaN or infinity (the
                message names it, e.g. ``features[2].spatial``).
        """
        m = self._check_index("model_index", model_index, self.num_models)
        return self._project(m, features, "features")

    def align(self, i: int, j: int, f_i: Tensor, f_j: Tensor) -> tuple[Tensor, Tensor]:
        r"""Mix the model with more layers onto the other's layer axis, for the registered pair ``(i, j)``.

        Args:
            i: First model of the pair.
            j: Second model of the pair; ``(i, j)`` must be one of ``pairs`` (in that order).
            f_i: Model ``i``'s projected features, from ``project(i, ...)``.
            f_j: Model ``j``'s projected features, from ``project(j, ...)``.

        Returns:
            ``(a_i, a_j)``, both of shape $(B, \min(L_i, L_j), 1 + s^2, d)$; the fewer-layer model's tensor is its
            input unchanged.

        Raises:
            TypeError: If ``f_i`` or ``f_j`` is not a floating-point tensor.
            ValueError: If ``(i, j)`` is not a registered pair, a tensor's shape is not $(B, L, 1 + s^2, d)$ for its
                model, or the batch sizes differ.
        """
        k = self._pair_index(i, j)
        for name, model, value in (("f_i", i, f_i), ("f_j", j, f_j)):
            check_tensor(name, value, ndim=4, floating=True)
            expected = (len(self._specs[model]), self.num_tokens, self._dim)
            if tuple(value.shape[1:]) != expected:
                raise ValueError(
                    f"`{name}` must have shape (B, {', '.join(map(str, expected))}) for model {model}, "
                    f"got {tuple(value.shape)}"
                )
        if f_i.shape[0] != f_j.shape[0]:
            raise ValueError(
                f"`f_i` and `f_j` must have the same batch size, got shapes {tuple(f_i.shape)} and {tuple(f_j.shape)}"
            )
        return self._mix(k, f_i, f_j)

    def forward(self, features: Sequence[Sequence[FeatureMap] | AdapterOutput]) -> list[tuple[Tensor, Tensor]]:
        r"""Project every model's layers and align every registered pair.

        Args:
            features: One entry per model (in construction order): its $L_m$ feature maps, shallow to deep, or its
                ``AdapterOutput``. Models that appear in no pair are not read.

        Returns:
            One ``(a_i, a_j)`` per entry ``(i, j)`` of ``pairs``, in that order, each tensor of shape
            $(B, \min(L_i, L_j), 1 + s^2, d)$.

        Raises:
            TypeError: If ``features``, an entry, or a tensor has the wrong type.
            ValueError: If the number of models or of a model's layers, or a channel count differs from the specs,
                a tensor has the wrong rank, batch sizes differ within or across models, or a tensor holds NaN or
                infinity (the message names it, e.g. ``features[1][0].semantic``).
        """
        items = _as_list("features", features, "per-model feature-map sequences")
        if len(items) != self.num_models:
            raise ValueError(
                f"`features` must hold one entry per model ({self.num_models} models), got {len(items)} entries"
            )
        used = sorted({m for pair in self._pairs for m in pair})
        projected = {m: self._project(m, items[m], f"features[{m}]") for m in used}
        first = used[0]
        for m in used[1:]:
            if projected[m].shape[0] != projected[first].shape[0]:
                raise ValueError(
                    f"all models must share one batch size, got {projected[first].shape[0]} for `features[{first}]` "
                    f"and {projected[m].shape[0]} for `features[{m}]`"
                )
        return [self._mix(k, projected[i], projected[j]) for k, (i, j) in enumerate(self._pairs)]

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``."""
        return (
            f"num_models={self.num_models}, num_layers={self.num_layers}, side={self._side}, dim={self._dim}, "
            f"softmax_axis={self._softmax_axis!r}, pairs={self._pairs}"
        )

    # ------------------------------------------------------------------------------------------------ internals
    @staticmethod
    def _check_index(name: str, value: Any, size: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{name}` must be an int, got {describe(value)}")
        if not 0 <= value < size:
            raise ValueError(f"`{name}` must be in [0, {size - 1}], got {value}")
        return value

    def _pair_index(self, i: Any, j: Any) -> int:
        for name, value in (("i", i), ("j", j)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"`{name}` must be an int model index, got {describe(value)}")
        try:
            return self._pairs.index((i, j))
        except ValueError:
            raise ValueError(f"`(i, j)` = {(i, j)} is not one of the decomposer's pairs {self._pairs}") from None

    def _project(self, m: int, features: Any, name: str) -> Tensor:
        if isinstance(features, AdapterOutput):
            features = features.features
        maps = _as_list(name, features, "FeatureMap (one per tapped layer)")
        specs = self._specs[m]
        if len(maps) != len(specs):
            raise ValueError(
                f"`{name}` must hold {len(specs)} feature maps for model {m} (one per tapped layer), got {len(maps)}"
            )
        s = self._side
        batch: int | None = None
        layers: list[Tensor] = []
        inputs: list[tuple[str, Tensor]] = []
        for layer, (feature_map, spec, projection) in enumerate(zip(maps, specs, self.projections[m], strict=True)):
            where = f"{name}[{layer}]"
            if isinstance(feature_map, Tensor) or not isinstance(feature_map, tuple | list) or len(feature_map) != 2:
                raise TypeError(f"`{where}` must be a FeatureMap(semantic, spatial), got {describe(feature_map)}")
            semantic, spatial = feature_map
            check_tensor(f"{where}.semantic", semantic, ndim=2, floating=True)
            check_tensor(f"{where}.spatial", spatial, ndim=4, floating=True)
            for part, value in (("semantic", semantic), ("spatial", spatial)):
                if value.shape[1] != spec.channels:
                    raise ValueError(
                        f"`{where}.{part}` of model {m} layer {layer} ({spec.name!r}) must have "
                        f"{spec.channels} channels (from its FeatureSpec), got shape {tuple(value.shape)}"
                    )
            if semantic.shape[0] != spatial.shape[0]:
                raise ValueError(
                    f"`{where}.semantic` and `{where}.spatial` must have the same batch size, got shapes "
                    f"{tuple(semantic.shape)} and {tuple(spatial.shape)}"
                )
            inputs += [(f"{where}.semantic", semantic), (f"{where}.spatial", spatial)]
            if batch is None:
                batch = semantic.shape[0]
            elif semantic.shape[0] != batch:
                raise ValueError(
                    f"all layers of model {m} must share one batch size, got {batch} for `{name}[0]` and "
                    f"{semantic.shape[0]} for `{where}`"
                )
            if tuple(spatial.shape[-2:]) != (s, s):
                spatial = F.interpolate(spatial, size=(s, s), mode="bilinear", align_corners=True, antialias=False)
            positions = spatial.permute(0, 2, 3, 1).reshape(spatial.shape[0], s * s, spec.channels)
            tokens = torch.cat([semantic.unsqueeze(1), positions], dim=1)
            layers.append(projection(tokens))
        check_all_finite(inputs)  # one device sync for all layers; names the first non-finite tensor
        return torch.stack(layers, dim=1)

    def _mix(self, k: int, f_i: Tensor, f_j: Tensor) -> tuple[Tensor, Tensor]:
        weights = self.mixing_weights(k)
        if f_i.shape[1] < f_j.shape[1]:
            # weights[t, s]: target = model i (rows), source = model j (columns).
            return f_i, torch.einsum("ts,bsnd->btnd", weights, f_j)
        # weights[s, t]: source = model i (rows), target = model j (columns).
        return torch.einsum("st,bsnd->btnd", weights, f_i), f_j

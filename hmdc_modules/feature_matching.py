"""Distribution matching through several heterogeneous models: the feature-statistics sibling of gradient matching.

[`HeterogeneousFeatureMatcher`][hmdc_modules.feature_matching.HeterogeneousFeatureMatcher] returns, per model, the
distance between the mean embeddings of a real and a synthetic batch (DM, Zhao & Bilen 2023) and, given a
[`SpatialSemanticDecomposer`][hmdc_modules.decomposition.SpatialSemanticDecomposer], one more distance per model
pair: that of the mean aligned tokens in the shared space (HMDC's distillation term under distribution matching,
see the how-to "Add HMDC to your condensation method"). The distances are separate so that a
[`GradientBalancer`][hmdc_modules.balancer.GradientBalancer] can weight them on the synthetic images. No parameter
gradient is involved: one forward pass of each batch per model, the real one without a graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hmdc_modules._validation import check_choice, check_module_sequence, check_tensor, describe
from hmdc_modules.decomposition import SpatialSemanticDecomposer
from hmdc_modules.features import AdapterOutput
from hmdc_modules.functional.feature_matching import STATISTIC_DISTANCES, mean_embedding_distance

__all__ = ["HeterogeneousFeatureMatcher", "default_embedding"]


def default_embedding(index: int, output: Any) -> Tensor:
    """The embedding a model's output gives: the deepest semantic vector of an adapter, or a tensor flattened.

    Args:
        index: The model's index (for messages).
        output: The model's output: an [`AdapterOutput`][hmdc_modules.features.AdapterOutput] (its last tapped
            layer's semantic vector, $(B, C)$: a CNN's global mean, a ViT's class token) or a tensor (flattened
            after the batch dimension, e.g. a headless network's features).

    Raises:
        TypeError: If ``output`` is neither.

    Examples:
        >>> import torch
        >>> default_embedding(0, torch.ones(2, 3, 4)).shape
        torch.Size([2, 12])
    """
    if isinstance(output, AdapterOutput):
        return output.features[-1].semantic
    if isinstance(output, Tensor):
        return output.flatten(1)
    raise TypeError(
        f"the output of `models[{index}]` must be an AdapterOutput or a tensor of embeddings, got {describe(output)}; "
        "pass `embedding` for other outputs"
    )


class HeterogeneousFeatureMatcher(nn.Module):
    r"""Per-model distribution matching between a real and a synthetic batch, for any number of models.

    For each model $m$ with embedding $e_m$ (by default
    [`default_embedding`][hmdc_modules.feature_matching.default_embedding]):

    $$
    d_m = D\Bigl(\tfrac{1}{B_r}\textstyle\sum_i e_m(x^{\mathrm{real}}_i),\;
        \tfrac{1}{B_s}\sum_i e_m(x^{\mathrm{syn}}_i)\Bigr)
    $$

    with $D$ from [`mean_embedding_distance`][hmdc_modules.functional.feature_matching.mean_embedding_distance]
    (``"sse"``, DM's, by default). With a ``decomposer`` (the models must then be adapters), each of its pairs
    $(i, j)$ adds $d_{ij} = D'(\bar a^{\mathrm{real}}, \bar a^{\mathrm{syn}})$, where $a$ is the pair's aligned
    tokens $[a_i; a_j]$ of shape $(B, 2\min(L_i, L_j), 1 + s^2, d)$ and $D'$ is ``shared_distance`` (``"mse"``,
    so the term does not grow with the token count). It asks the synthetic batch to reproduce the real data's
    spatial and semantic statistics of every tapped layer of both models, in the space where the mutual
    distillation loss aligns them.

    The real batch runs without a graph; the result is differentiable with respect to the synthetic batch (and the
    models' and decomposer's parameters through it). Call it one class at a time, as DM does. The matcher neither
    switches train/eval mode nor zeros ``.grad``.

    Args:
        models: The models (at least one), e.g. adapters or headless embedding networks.
        distance: Distance of the per-model mean embeddings, one of
            [`STATISTIC_DISTANCES`][hmdc_modules.functional.feature_matching.STATISTIC_DISTANCES].
        embedding: ``embedding(model_index, model_output) -> (B, *)`` tensor; default ``default_embedding``.
        decomposer: Optional decomposer over the same models (in the same order).
        shared_distance: Distance of the mean aligned tokens.

    Raises:
        TypeError: If ``models`` is not a non-empty sequence of modules, ``embedding`` is not callable, or
            ``decomposer`` is not a ``SpatialSemanticDecomposer``.
        ValueError: If a distance is unknown or the decomposer was built for another number of models.

    Shape:
        - forward inputs: ``real_x`` $(B_r, \ast)$, ``synthetic_x`` $(B_s, \ast)$
        - forward output: $(M + P,)$ for $M$ models and $P$ decomposer pairs ($P = 0$ without one)

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.Tanh())
        >>> matcher = HeterogeneousFeatureMatcher([cnn, mlp])
        >>> real = torch.randn(2, 16, 3, 8, 8)                          # [classes, images, C, H, W]
        >>> synthetic = torch.randn(2, 4, 3, 8, 8, requires_grad=True)
        >>> total = sum(matcher(real[c], synthetic[c]).sum() for c in range(2))   # one class at a time
        >>> total.backward()
        >>> synthetic.grad.shape
        torch.Size([2, 4, 3, 8, 8])
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        distance: str = "sse",
        *,
        embedding: Callable[[int, Any], Tensor] | None = None,
        decomposer: SpatialSemanticDecomposer | None = None,
        shared_distance: str = "mse",
    ) -> None:
        super().__init__()
        check_module_sequence("models", models)
        if embedding is not None and not callable(embedding):
            raise TypeError(f"`embedding` must be callable or None, got {describe(embedding)}")
        if decomposer is not None and not isinstance(decomposer, SpatialSemanticDecomposer):
            raise TypeError(f"`decomposer` must be a SpatialSemanticDecomposer or None, got {describe(decomposer)}")
        if decomposer is not None and decomposer.num_models != len(models):
            raise ValueError(
                f"`decomposer` was built for {decomposer.num_models} models, but `models` holds {len(models)}"
            )
        self.models = nn.ModuleList(models)
        self.distance = check_choice("distance", distance, STATISTIC_DISTANCES)
        self.shared_distance = check_choice("shared_distance", shared_distance, STATISTIC_DISTANCES)
        self.embedding: Callable[[int, Any], Tensor] = embedding if embedding is not None else default_embedding
        self.decomposer = decomposer

    @property
    def num_models(self) -> int:
        """Number $M$ of models."""
        return len(self.models)

    @property
    def num_losses(self) -> int:
        """Number of distances ``forward`` returns: one per model, then one per decomposer pair.

        Examples:
            >>> from torch import nn
            >>> HeterogeneousFeatureMatcher([nn.Flatten(), nn.Flatten()]).num_losses
            2
        """
        return self.num_models + (0 if self.decomposer is None else len(self.decomposer.pairs))

    def _run(self, m: int, x: Tensor, x_name: str) -> Any:
        try:
            return self.models[m](x)
        except (TypeError, ValueError) as error:
            kind = TypeError if isinstance(error, TypeError) else ValueError
            raise kind(f"`{x_name}` does not suit `models[{m}]` ({type(self.models[m]).__name__}): {error}") from error

    def _outputs(self, x: Tensor, x_name: str) -> list[Any]:
        outputs = [self._run(m, x, x_name) for m in range(self.num_models)]
        if self.decomposer is not None:
            for m, output in enumerate(outputs):
                if not isinstance(output, AdapterOutput):
                    raise TypeError(
                        f"with a decomposer, `models[{m}]` must return an AdapterOutput (wrap it in an adapter), "
                        f"got {describe(output)}"
                    )
        return outputs

    def forward(self, real_x: Tensor, synthetic_x: Tensor) -> Tensor:
        r"""The per-model (and per-pair) distribution-matching distances of one class's batches.

        Args:
            real_x: Real inputs (run without a graph).
            synthetic_x: Synthetic inputs, usually augmented with the same parameters as ``real_x``.

        Returns:
            $(d_1, \dots, d_M, d_{\mathrm{pair}_1}, \dots)$.

        Raises:
            TypeError: If an input is not a floating tensor, or an output has no usable embedding.
            ValueError: If a batch is empty, a model refuses an input (the message names ``real_x`` or
                ``synthetic_x``), embeddings of the two batches differ in shape, or one holds NaN or infinity.

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> matcher = HeterogeneousFeatureMatcher([nn.Linear(4, 3), nn.Linear(4, 5)], "mse")
            >>> matcher(torch.randn(8, 4), torch.randn(2, 4, requires_grad=True)).shape
            torch.Size([2])
        """
        for name, value in (("real_x", real_x), ("synthetic_x", synthetic_x)):
            check_tensor(name, value, floating=True, nonempty=True)
        with torch.no_grad():
            real = self._outputs(real_x, "real_x")
            real_pairs = None if self.decomposer is None else self.decomposer([o.features for o in real])
        synthetic = self._outputs(synthetic_x, "synthetic_x")
        distances = [
            mean_embedding_distance(
                self.embedding(m, real[m]),
                self.embedding(m, synthetic[m]),
                self.distance,
                real_name=f"embedding of models[{m}] on real_x",
                synthetic_name=f"embedding of models[{m}] on synthetic_x",
            )
            for m in range(self.num_models)
        ]
        if self.decomposer is not None and real_pairs is not None:
            synthetic_pairs = self.decomposer([o.features for o in synthetic])
            for (i, j), (ri, rj), (si, sj) in zip(self.decomposer.pairs, real_pairs, synthetic_pairs, strict=True):
                distances.append(
                    mean_embedding_distance(
                        torch.cat([ri, rj], 1),
                        torch.cat([si, sj], 1),
                        self.shared_distance,
                        real_name=f"aligned tokens of models {i} and {j} on real_x",
                        synthetic_name=f"aligned tokens of models {i} and {j} on synthetic_x",
                    )
                )
        return torch.stack(distances)

    def extra_repr(self) -> str:
        """Summary for ``repr``."""
        pairs = 0 if self.decomposer is None else len(self.decomposer.pairs)
        return f"num_models={self.num_models}, distance={self.distance!r}, shared_pairs={pairs}"

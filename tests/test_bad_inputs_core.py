"""Bad inputs to the core modules, their functional forms and the adapters (issue 14).

Every case must raise one ``ValueError`` or ``TypeError`` whose single-line message names the argument the caller
passed (in backticks), raised from library code: the traceback's last frame is never inside torch.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from torch import Tensor, nn

from hmdc_modules.adapters import (
    CNNAdapter,
    HookAdapter,
    TimmAdapter,
    ViTAdapter,
    auto_adapter,
    disable_fused_attention,
    to_feature_map,
)
from hmdc_modules.balancer import GradientBalancer
from hmdc_modules.condensation import ConvNet
from hmdc_modules.decomposition import SpatialSemanticDecomposer
from hmdc_modules.distillation import MutualDistillationLoss
from hmdc_modules.features import FeatureMap, FeatureSpec, logits_of
from hmdc_modules.functional.balancing import balance_weights, normalize_image_gradients
from hmdc_modules.functional.distillation import mutual_distillation_loss
from hmdc_modules.functional.matching import gradient_distance, match_gradients, soft_cross_entropy
from hmdc_modules.matching import HeterogeneousGradientMatcher

TORCH_DIR = str(Path(torch.__file__).parent)
NAN = float("nan")


# ----------------------------------------------------------------------------------------------------------------
# small fixtures built fresh per case


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    )


def images(batch: int = 2, dtype: torch.dtype = torch.float32, grad: bool = False) -> Tensor:
    return torch.randn(batch, 3, 8, 8, dtype=dtype, requires_grad=grad)


def target() -> Tensor:
    return torch.randn(4, 3, requires_grad=True)


def losses_on(x: Tensor, n: int = 2) -> list[Tensor]:
    return [(k + 1.0) * x.pow(k + 1).sum() for k in range(n)]


def convnet_adapter() -> CNNAdapter:
    torch.manual_seed(0)
    return CNNAdapter(ConvNet(num_classes=3, width=4))


def ce_losses(model: nn.Module, x: Tensor) -> Tensor:
    return soft_cross_entropy(model(x), torch.tensor([0, 1][: x.shape[0]]))


class HardNet(nn.Module):
    """hardsigmoid has no second derivative (as in MobileNetV3)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3 * 8 * 8, 3)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(self.lin(x.flatten(1)))


CNN_SPECS = [FeatureSpec("a", 4, 8, 8), FeatureSpec("b", 4, 4, 4)]
VIT_SPECS = [FeatureSpec(f"v{k}", 6, 4, 4) for k in range(3)]


def features(specs: list[FeatureSpec], batch: int = 2) -> list[FeatureMap]:
    return [
        FeatureMap(torch.randn(batch, s.channels), torch.randn(batch, s.channels, s.height, s.width)) for s in specs
    ]


def decomposer() -> SpatialSemanticDecomposer:
    return SpatialSemanticDecomposer([CNN_SPECS, VIT_SPECS])


def nan_at(t: Tensor) -> Tensor:
    t = t.clone()
    t.view(-1)[0] = NAN
    return t


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=3, img_size=32, patch_size=4)


# ----------------------------------------------------------------------------------------------------------------
# the cases: (component, argument named in the message, expected error, call)

Case = tuple[str, str, type[Exception], Callable[[], Any]]

BALANCER: list[Case] = [
    ("balancer", "num_losses", ValueError, lambda: GradientBalancer(0)),
    ("balancer", "num_losses", TypeError, lambda: GradientBalancer(2.0)),  # type: ignore[arg-type]
    ("balancer", "num_groups", ValueError, lambda: GradientBalancer(2, num_groups=-1)),
    ("balancer", "interval", ValueError, lambda: GradientBalancer(2, interval=0)),
    ("balancer", "init_value", ValueError, lambda: GradientBalancer(2, init_value=-1e-6)),
    ("balancer", "init_value", TypeError, lambda: GradientBalancer(2, init_value="0")),  # type: ignore[arg-type]
    ("balancer", "accumulate", ValueError, lambda: GradientBalancer(2, accumulate="max")),  # type: ignore[arg-type]
    ("balancer", "momentum", ValueError, lambda: GradientBalancer(2, accumulate="ema", momentum=1.0)),
    ("balancer", "norm", ValueError, lambda: GradientBalancer(2, norm="1")),  # type: ignore[arg-type]
    ("balancer", "history_size", ValueError, lambda: GradientBalancer(2, history_size=-1)),
    ("balancer", "loss_names", TypeError, lambda: GradientBalancer(2, loss_names="ab")),
    ("balancer", "loss_names", ValueError, lambda: GradientBalancer(2, loss_names=["a", "a"])),
    ("balancer", "loss_names", ValueError, lambda: GradientBalancer(2, loss_names=["a"])),
    ("balancer", "losses", ValueError, lambda: GradientBalancer(3)(losses_on(t := target()), t)),
    ("balancer", "losses", TypeError, lambda: GradientBalancer(2)(target().sum(), target())),
    ("balancer", "losses", TypeError, lambda: GradientBalancer(2)({"a": target().sum()}, target())),
    ("balancer", "losses[0]", ValueError, lambda: GradientBalancer(2)([t := target(), t.sum()], t)),
    ("balancer", "losses[1]", ValueError, lambda: GradientBalancer(2)([(t := target()).sum(), t.sum() * NAN], t)),
    ("balancer", "losses[1]", ValueError, lambda: GradientBalancer(2)([(t := target()).sum(), torch.ones(())], t)),
    ("balancer", "target", ValueError, lambda: GradientBalancer(2)(losses_on(target()), torch.ones(3))),
    ("balancer", "target", TypeError, lambda: GradientBalancer(2)(losses_on(target()), np.ones(3))),
    ("balancer", "target", ValueError, lambda: GradientBalancer(2)(losses_on(target()), [])),
    ("balancer", "target", ValueError, lambda: GradientBalancer(2).backward(losses_on(t := target() * 2), t)),
    ("balancer", "group", ValueError, lambda: GradientBalancer(2, num_groups=2)(losses_on(t := target()), t, 2)),
    ("balancer", "group", TypeError, lambda: GradientBalancer(2).weights("0")),  # type: ignore[arg-type]
    ("balancer", "sample", TypeError, lambda: GradientBalancer(2)(losses_on(t := target()), t, sample=1)),
    ("balancer", "owned_groups", TypeError, lambda: GradientBalancer(2).sync("0")),
    ("balancer", "owned_groups", ValueError, lambda: GradientBalancer(2).sync([1])),
    ("balancer", "state", ValueError, lambda: GradientBalancer(2).set_extra_state({"num_losses": 2})),
    ("balancing", "magnitudes", ValueError, lambda: balance_weights(torch.tensor([1.0, -1.0]))),
    ("balancing", "magnitudes", ValueError, lambda: balance_weights(torch.tensor([1.0, NAN]))),
    ("balancing", "magnitudes", TypeError, lambda: balance_weights(torch.tensor([1, 2]))),
    ("balancing", "grad", ValueError, lambda: normalize_image_gradients(torch.ones(2, 2))),
    ("balancing", "eps", ValueError, lambda: normalize_image_gradients(torch.ones(1, 2, 2), eps=-1.0)),
]

MATCHING: list[Case] = [
    ("matcher", "models", TypeError, lambda: HeterogeneousGradientMatcher(net())),  # type: ignore[arg-type]
    ("matcher", "models", ValueError, lambda: HeterogeneousGradientMatcher([])),
    ("matcher", "models[1]", TypeError, lambda: HeterogeneousGradientMatcher([net(), "vit"])),  # type: ignore[list-item]
    ("matcher", "distance", ValueError, lambda: HeterogeneousGradientMatcher([net()], "l2")),
    ("matcher", "eps", ValueError, lambda: HeterogeneousGradientMatcher([net()], eps=-1.0)),
    ("matcher", "objective", TypeError, lambda: HeterogeneousGradientMatcher([net()], objective="ce")),  # type: ignore[arg-type]
    ("matcher", "parameters", TypeError, lambda: HeterogeneousGradientMatcher([net()], parameters=3)),  # type: ignore[arg-type]
    ("matcher", "parameters", ValueError, lambda: HeterogeneousGradientMatcher([net()], parameters=[[], []])),
    ("matcher", "real_x", TypeError, lambda: HeterogeneousGradientMatcher([net()])([[0.0]], 0, images(), 0)),
    ("matcher", "real_x", ValueError, lambda: HeterogeneousGradientMatcher([net()])(torch.zeros(3), 0, images(), 0)),
    (
        "matcher",
        "real_target",
        ValueError,
        lambda: HeterogeneousGradientMatcher([net()])(
            images(4), torch.tensor([0, 1]), images(grad=True), torch.tensor([0, 1])
        ),
    ),
    (
        "matcher",
        "real_target",
        ValueError,
        lambda: HeterogeneousGradientMatcher([net()])(
            images(), torch.tensor([0, 9]), images(grad=True), torch.tensor([0, 1])
        ),
    ),
    (
        "matcher",
        "synthetic_target",
        TypeError,
        lambda: HeterogeneousGradientMatcher([net()])(images(), torch.tensor([0, 1]), images(grad=True), torch.ones(2)),
    ),
    (
        "matcher",
        "synthetic_x",
        TypeError,
        lambda: HeterogeneousGradientMatcher([convnet_adapter()])(
            torch.randn(2, 3, 32, 32),
            torch.tensor([0, 1]),
            torch.randn(2, 3, 32, 32, dtype=torch.float64),
            torch.tensor([0, 1]),
        ),
    ),
    (
        "matcher",
        "real_x",
        ValueError,
        lambda: HeterogeneousGradientMatcher([convnet_adapter()])(
            torch.randn(2, 1, 32, 32), torch.tensor([0, 1]), torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
        ),
    ),
    (
        "matcher",
        "models[0]",
        ValueError,
        lambda: HeterogeneousGradientMatcher([HardNet()])(
            images(), torch.tensor([0, 1]), images(grad=True), torch.tensor([0, 1])
        ),
    ),
    (
        "matcher",
        "real_losses",
        TypeError,
        lambda: HeterogeneousGradientMatcher([n := net()]).match(ce_losses(n, images()), []),
    ),
    (
        "matcher",
        "real_losses",
        ValueError,
        lambda: HeterogeneousGradientMatcher([n := net()]).match(
            [ce_losses(n, images())], [ce_losses(n, images())] * 2
        ),
    ),
    ("matcher", "index", ValueError, lambda: HeterogeneousGradientMatcher([net()]).parameters_of(3)),
    ("functional matching", "logits", ValueError, lambda: soft_cross_entropy(torch.zeros(3), torch.tensor([0, 1, 2]))),
    ("functional matching", "target", TypeError, lambda: soft_cross_entropy(torch.zeros(2, 3), torch.ones(2))),
    ("functional matching", "target", TypeError, lambda: soft_cross_entropy(torch.zeros(2, 3), np.zeros(2))),
    (
        "functional matching",
        "reduction",
        ValueError,
        lambda: soft_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), "avg"),
    ),
    ("functional matching", "real", TypeError, lambda: gradient_distance(torch.ones(2), [torch.ones(2)])),
    ("functional matching", "real[0]", ValueError, lambda: gradient_distance([torch.ones(2)], [torch.ones(3)])),
    ("functional matching", "synthetic", ValueError, lambda: gradient_distance([torch.ones(2)], [])),
    ("functional matching", "distance", ValueError, lambda: gradient_distance([torch.ones(2)], [torch.ones(2)], "l1")),
    ("functional matching", "eps", TypeError, lambda: gradient_distance([torch.ones(2)], [torch.ones(2)], eps="0")),
    (
        "functional matching",
        "parameters",
        ValueError,
        lambda: match_gradients(ce_losses(n := net(), images()), ce_losses(n, images()), []),
    ),
    (
        "functional matching",
        "synthetic_loss",
        ValueError,
        lambda: match_gradients(ce_losses(n := net(), images()), ce_losses(n, images()) * NAN, list(n.parameters())),
    ),
    (
        "functional matching",
        "real_loss",
        ValueError,
        lambda: match_gradients((n := net())(images()), ce_losses(n, images()), list(n.parameters())),
    ),
]

DISTILLATION: list[Case] = [
    (
        "functional distillation",
        "input",
        ValueError,
        lambda: mutual_distillation_loss(torch.ones(2, 3), torch.ones(3, 2)),
    ),
    (
        "functional distillation",
        "input",
        TypeError,
        lambda: mutual_distillation_loss(torch.ones(2, dtype=torch.long), torch.ones(2)),
    ),
    ("functional distillation", "input", TypeError, lambda: mutual_distillation_loss(np.ones(2), torch.ones(2))),
    (
        "functional distillation",
        "target",
        ValueError,
        lambda: mutual_distillation_loss(torch.ones(2), torch.tensor([1.0, NAN])),
    ),
    (
        "functional distillation",
        "reduction",
        ValueError,
        lambda: mutual_distillation_loss(torch.ones(2), torch.ones(2), "avg"),
    ),
    (
        "functional distillation",
        "distance",
        ValueError,
        lambda: mutual_distillation_loss(torch.ones(2), torch.ones(2), distance="sse"),
    ),
    (
        "functional distillation",
        "beta",
        ValueError,
        lambda: mutual_distillation_loss(torch.ones(2), torch.ones(2), beta=-1.0),
    ),
    ("distillation", "reduction", ValueError, lambda: MutualDistillationLoss("batchmean")),  # type: ignore[arg-type]
    ("distillation", "input", ValueError, lambda: MutualDistillationLoss()([])),
    ("distillation", "input[0]", ValueError, lambda: MutualDistillationLoss()([(torch.ones(2),) * 3])),
    ("distillation", "input[0]", TypeError, lambda: MutualDistillationLoss()([torch.ones(2)])),
    ("distillation", "input", TypeError, lambda: MutualDistillationLoss()(np.ones(2), np.ones(2))),
    ("distillation", "target", TypeError, lambda: MutualDistillationLoss()(torch.ones(2))),
    (
        "distillation",
        "target",
        TypeError,
        lambda: MutualDistillationLoss()([(torch.ones(2), torch.ones(2))], torch.ones(2)),
    ),
    (
        "distillation",
        "input[0][1]",
        ValueError,
        lambda: MutualDistillationLoss()([(torch.ones(2), torch.tensor([0.0, NAN]))]),
    ),
]

DECOMPOSITION: list[Case] = [
    ("decomposer", "models", ValueError, lambda: SpatialSemanticDecomposer([CNN_SPECS])),
    ("decomposer", "models", TypeError, lambda: SpatialSemanticDecomposer(convnet_adapter())),  # type: ignore[arg-type]
    ("decomposer", "models[1]", ValueError, lambda: SpatialSemanticDecomposer([CNN_SPECS, []])),
    ("decomposer", "models[0][0]", TypeError, lambda: SpatialSemanticDecomposer([[("a", 4, 8, 8)], VIT_SPECS])),
    ("decomposer", "image_size", TypeError, lambda: SpatialSemanticDecomposer([CNN_SPECS, VIT_SPECS], "32")),  # type: ignore[arg-type]
    ("decomposer", "side", ValueError, lambda: SpatialSemanticDecomposer([CNN_SPECS, VIT_SPECS], side=0)),
    ("decomposer", "dim", TypeError, lambda: SpatialSemanticDecomposer([CNN_SPECS, VIT_SPECS], dim=8.0)),  # type: ignore[arg-type]
    (
        "decomposer",
        "softmax_axis",
        ValueError,
        lambda: SpatialSemanticDecomposer([CNN_SPECS, VIT_SPECS], softmax_axis="rows"),
    ),  # type: ignore[arg-type]
    ("decomposer", "pairs", ValueError, lambda: SpatialSemanticDecomposer([CNN_SPECS, VIT_SPECS], pairs="ring")),  # type: ignore[arg-type]
    ("decomposer", "pairs[0]", ValueError, lambda: SpatialSemanticDecomposer([CNN_SPECS, VIT_SPECS], pairs=[(0, 0)])),
    ("decomposer", "features", ValueError, lambda: decomposer()([features(CNN_SPECS)])),
    (
        "decomposer",
        "features[0][0].semantic",
        ValueError,
        lambda: decomposer()([features(VIT_SPECS[:2]), features(VIT_SPECS)]),
    ),
    (
        "decomposer",
        "features[1][0].spatial",
        ValueError,
        lambda: decomposer()(
            [
                features(CNN_SPECS),
                [FeatureMap(f.semantic, nan_at(f.spatial)) if i == 0 else f for i, f in enumerate(features(VIT_SPECS))],
            ]
        ),
    ),
    ("decomposer", "features[1]", ValueError, lambda: decomposer()([features(CNN_SPECS), features(VIT_SPECS)[:2]])),
    ("decomposer", "pair_index", ValueError, lambda: decomposer().mixing_weights(5)),
    ("decomposer", "model_index", TypeError, lambda: decomposer().project("0", features(CNN_SPECS))),  # type: ignore[arg-type]
    ("decomposer", "(i, j)", ValueError, lambda: decomposer().align(1, 0, torch.zeros(1), torch.zeros(1))),
]

ADAPTERS: list[Case] = [
    ("adapters", "model", TypeError, lambda: auto_adapter("resnet18")),  # type: ignore[arg-type]
    ("adapters", "model", TypeError, lambda: auto_adapter(nn.Linear(2, 2))),
    ("adapters", "model", ValueError, lambda: auto_adapter(convnet_adapter(), input_size=32)),
    ("adapters", "model", TypeError, lambda: disable_fused_attention(None)),  # type: ignore[arg-type]
    ("adapters", "model", TypeError, lambda: TimmAdapter(nn.Linear(2, 2))),
    ("adapters", "indices[0]", ValueError, lambda: TimmAdapter(tiny_vit(), indices=[99])),
    ("adapters", "indices", TypeError, lambda: TimmAdapter(tiny_vit(), indices="all")),  # type: ignore[arg-type]
    ("adapters", "semantic", ValueError, lambda: TimmAdapter(tiny_vit(), semantic="first")),
    ("adapters", "layers", TypeError, lambda: HookAdapter(net(), "0")),  # type: ignore[arg-type]
    ("adapters", "layers", ValueError, lambda: HookAdapter(net(), ["9"])),
    ("adapters", "layers", ValueError, lambda: CNNAdapter(net())),
    ("adapters", "layout", ValueError, lambda: HookAdapter(net(), ["0"], layout="chw")),
    ("adapters", "input_size", ValueError, lambda: HookAdapter(net(), ["0"], input_size=0)),
    ("adapters", "output_fn", TypeError, lambda: HookAdapter(net(), ["0"], output_fn=3)),  # type: ignore[arg-type]
    ("adapters", "num_prefix_tokens", TypeError, lambda: ViTAdapter(tiny_vit(), ["blocks.0"], num_prefix_tokens=1.0)),  # type: ignore[arg-type]
    ("adapters", "x", ValueError, lambda: HookAdapter(net(), ["0"])(torch.zeros(3, 8, 8))),
    ("adapters", "x", TypeError, lambda: HookAdapter(net(), ["0"])(images(dtype=torch.float64))),
    ("adapters", "x", ValueError, lambda: HookAdapter(net(), ["0"])(torch.zeros(2, 1, 8, 8))),
    ("adapters", "x", TypeError, lambda: HookAdapter(net(), ["0"])(np.zeros((2, 3, 8, 8)))),
    ("adapters", "image_size", ValueError, lambda: convnet_adapter().feature_specs(0)),
    ("adapters", "in_channels", ValueError, lambda: convnet_adapter().feature_specs(32, in_channels=0)),
    ("adapters", "layout", ValueError, lambda: to_feature_map(torch.zeros(1, 2, 3, 3), "hwc")),
    (
        "adapters",
        "grid_size",
        ValueError,
        lambda: to_feature_map(torch.zeros(1, 5, 2), "nlc", num_prefix_tokens=1, grid_size=3),
    ),
    ("adapters", "output", TypeError, lambda: logits_of({"scores": torch.zeros(1)})),
]

CASES = BALANCER + MATCHING + DISTILLATION + DECOMPOSITION + ADAPTERS


def _case_id(case: Case) -> str:
    component, argument, error, _ = case
    return f"{component}:{argument}:{error.__name__}"


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{_case_id(c)}" for i, c in enumerate(CASES)])
def test_bad_input_raises_one_clear_error_naming_the_argument(case: Case) -> None:
    _, argument, error, call = case
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert f"`{argument}`" in message, message
    assert "\n" not in message, message
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert not last.filename.startswith(TORCH_DIR), f"raised inside torch at {last.filename}:{last.lineno}"
    assert "hmdc_modules" in last.filename, f"raised outside the library at {last.filename}:{last.lineno}"


def test_at_least_55_distinct_bad_inputs() -> None:
    counts = {}
    for component, *_ in CASES:
        counts[component] = counts.get(component, 0) + 1
    assert len(CASES) >= 55, counts
    assert len({_case_id(c) + str(i) for i, c in enumerate(CASES)}) == len(CASES)

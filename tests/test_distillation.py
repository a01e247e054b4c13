"""Tests for the mutual-distillation distance D_MD (functional and module forms)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hmdc_modules.decomposition import SpatialSemanticDecomposer
from hmdc_modules.distillation import MutualDistillationLoss
from hmdc_modules.features import FeatureMap, FeatureSpec
from hmdc_modules.functional.distillation import mutual_distillation_loss

DISTANCES = ["mse", "l1", "smooth_l1"]


def ref_elementwise(a: torch.Tensor, b: torch.Tensor, distance: str, beta: float = 1.0) -> list[float]:
    """One python float per element, written out by hand."""
    out = []
    for x, y in zip(a.flatten().tolist(), b.flatten().tolist(), strict=True):
        delta = x - y
        if distance == "mse":
            out.append(delta * delta)
        elif distance == "l1":
            out.append(abs(delta))
        elif abs(delta) < beta:
            out.append(0.5 * delta * delta / beta)
        else:
            out.append(abs(delta) - 0.5 * beta)
    return out


finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def tensor_pairs(draw) -> tuple[torch.Tensor, torch.Tensor]:
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    n = 1
    for size in shape:
        n *= size
    a = draw(st.lists(finite, min_size=n, max_size=n))
    b = draw(st.lists(finite, min_size=n, max_size=n))
    return torch.tensor(a, dtype=torch.float64).reshape(shape), torch.tensor(b, dtype=torch.float64).reshape(shape)


# ---------------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_matches_elementwise_reference(distance, beta):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64)
    terms = ref_elementwise(a, b, distance, beta)
    got_none = mutual_distillation_loss(a, b, reduction="none", distance=distance, beta=beta)
    assert got_none.shape == a.shape
    torch.testing.assert_close(got_none.flatten(), torch.tensor(terms, dtype=torch.float64))
    torch.testing.assert_close(
        mutual_distillation_loss(a, b, "sum", distance, beta=beta), torch.tensor(sum(terms), dtype=torch.float64)
    )
    torch.testing.assert_close(
        mutual_distillation_loss(a, b, "mean", distance, beta=beta),
        torch.tensor(sum(terms) / len(terms), dtype=torch.float64),
    )


def test_default_is_mse_mean_with_equal_weight_per_token():
    # Only the semantic token (position 0 of 17) differs, by 1: loss = 1/17 of the elements with error 1.
    a = torch.zeros(2, 4, 17, 8)
    b = a.clone()
    b[:, :, 0] = 1.0
    torch.testing.assert_close(mutual_distillation_loss(a, b), torch.tensor(1.0 / 17))
    torch.testing.assert_close(MutualDistillationLoss()(a, b), torch.tensor(1.0 / 17))


def test_smooth_l1_beta_zero_is_l1():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(
        mutual_distillation_loss(a, b, distance="smooth_l1", beta=0.0), mutual_distillation_loss(a, b, distance="l1")
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_follows_input(dtype):
    a, b = torch.randn(2, 3).to(dtype), torch.randn(2, 3).to(dtype)
    assert mutual_distillation_loss(a, b).dtype == dtype
    assert MutualDistillationLoss(reduction="none")(a, b).dtype == dtype


# ---------------------------------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=20)
@given(pair=tensor_pairs(), distance=st.sampled_from(DISTANCES))
def test_property_zero_on_identical_inputs(pair, distance):
    a, _ = pair
    for reduction in ("mean", "sum"):
        assert float(mutual_distillation_loss(a, a.clone(), reduction, distance)) == 0.0
    assert bool((mutual_distillation_loss(a, a.clone(), "none", distance) == 0).all())


@settings(deadline=None, max_examples=20)
@given(pair=tensor_pairs(), distance=st.sampled_from(DISTANCES), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_property_symmetric_and_non_negative(pair, distance, reduction):
    a, b = pair
    ab = mutual_distillation_loss(a, b, reduction, distance)
    ba = mutual_distillation_loss(b, a, reduction, distance)
    torch.testing.assert_close(ab, ba)
    assert bool((ab >= 0).all())


@settings(deadline=None, max_examples=20)
@given(pair=tensor_pairs(), distance=st.sampled_from(DISTANCES))
def test_property_reductions_consistent(pair, distance):
    a, b = pair
    none = mutual_distillation_loss(a, b, "none", distance)
    total = mutual_distillation_loss(a, b, "sum", distance)
    mean = mutual_distillation_loss(a, b, "mean", distance)
    torch.testing.assert_close(total, mean * a.numel())
    torch.testing.assert_close(total, none.sum())
    module = MutualDistillationLoss(reduction="sum", distance=distance)
    torch.testing.assert_close(module(a, b), total)


# ---------------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck(distance, reduction):
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: mutual_distillation_loss(x, y, reduction, distance, beta=0.5), (a, b))


def test_both_sides_receive_gradient_no_stop_gradient():
    a = torch.randn(2, 3, 5, requires_grad=True)
    b = torch.randn(2, 3, 5, requires_grad=True)
    MutualDistillationLoss()(a, b).backward()
    expected = 2.0 * (a - b).detach() / a.numel()
    torch.testing.assert_close(a.grad, expected)
    torch.testing.assert_close(b.grad, -expected)


# ---------------------------------------------------------------------------------------------------- pairs


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_module_sums_over_pairs(distance, reduction):
    pairs = [(torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)), (torch.randn(2, 1, 5, 4), torch.randn(2, 1, 5, 4))]
    expected = sum(mutual_distillation_loss(a, b, reduction, distance) for a, b in pairs)
    torch.testing.assert_close(MutualDistillationLoss(reduction, distance)(pairs), expected)
    torch.testing.assert_close(MutualDistillationLoss(reduction, distance)(tuple(pairs)), expected)


def test_module_none_with_pairs_returns_tuple_of_elementwise_losses():
    pairs = [(torch.randn(2, 3), torch.randn(2, 3)), (torch.randn(4), torch.randn(4))]
    out = MutualDistillationLoss(reduction="none")(pairs)
    assert isinstance(out, tuple) and len(out) == 2
    for (a, b), value in zip(pairs, out, strict=True):
        torch.testing.assert_close(value, (a - b) ** 2)


def test_end_to_end_with_decomposer_trains_projections_and_matching():
    specs = [
        [FeatureSpec("a0", 3, 4, 4), FeatureSpec("a1", 3, 2, 2)],
        [FeatureSpec(f"b{k}", 4, 2, 2) for k in range(3)],
    ]
    dec = SpatialSemanticDecomposer(specs)
    feats = [
        [FeatureMap(torch.randn(2, sp.channels), torch.randn(2, sp.channels, sp.height, sp.width)) for sp in m]
        for m in specs
    ]
    loss = MutualDistillationLoss()(dec(feats))
    assert loss.ndim == 0
    loss.backward()
    assert dec.layer_matching[0].grad is not None and dec.layer_matching[0].grad.abs().sum() > 0
    for model_projections in dec.projections:
        for proj in model_projections:
            assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


def test_repr():
    assert repr(MutualDistillationLoss()) == "MutualDistillationLoss(reduction='mean', distance='mse')"
    assert "beta=0.5" in repr(MutualDistillationLoss(distance="smooth_l1", beta=0.5))


# ---------------------------------------------------------------------------------------------------- bad input


def test_functional_bad_inputs():
    a = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"identical shapes, got \(2, 3\) and \(3, 2\)"):
        mutual_distillation_loss(a, torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"identical shapes, got \(2, 3\) and \(1, 3\)"):
        mutual_distillation_loss(a, torch.randn(1, 3))  # no silent broadcasting
    with pytest.raises(TypeError, match=r"`input` must be a torch\.Tensor, got list"):
        mutual_distillation_loss([1.0], a)
    with pytest.raises(TypeError, match=r"`target` must be a torch\.Tensor"):
        mutual_distillation_loss(a, 1.0)
    with pytest.raises(TypeError, match=r"`target` must have a floating-point dtype, got torch\.int64"):
        mutual_distillation_loss(a, torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one element"):
        mutual_distillation_loss(torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="`reduction` must be one of 'mean', 'sum', 'none', got 'max'"):
        mutual_distillation_loss(a, a, reduction="max")
    with pytest.raises(ValueError, match="`distance` must be one of 'mse', 'l1', 'smooth_l1', got 'cosine'"):
        mutual_distillation_loss(a, a, distance="cosine")
    with pytest.raises(ValueError, match="`beta` must be a finite number >= 0, got -1"):
        mutual_distillation_loss(a, a, distance="smooth_l1", beta=-1.0)
    with pytest.raises(TypeError, match="`beta` must be a float"):
        mutual_distillation_loss(a, a, beta="1")


def test_module_bad_arguments():
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        MutualDistillationLoss(reduction="avg")
    with pytest.raises(ValueError, match="`distance` must be one of"):
        MutualDistillationLoss(distance="kl")
    with pytest.raises(ValueError, match="`beta` must be a finite number >= 0"):
        MutualDistillationLoss(beta=float("inf"))


def test_module_bad_inputs():
    loss = MutualDistillationLoss()
    a = torch.randn(2, 3)
    with pytest.raises(TypeError, match=r"`target` must be a torch\.Tensor when `input` is a tensor, got None"):
        loss(a)
    with pytest.raises(TypeError, match="`target` must be None when `input` is a sequence"):
        loss([(a, a)], a)
    with pytest.raises(TypeError, match=r"`input` must be a torch\.Tensor or a sequence of"):
        loss(3.0)
    with pytest.raises(ValueError, match="`input` must hold at least one"):
        loss([])
    with pytest.raises(TypeError, match=r"`input\[0\]` must be an \(a, b\) pair of tensors, got Tensor"):
        loss([a, a])
    with pytest.raises(ValueError, match=r"`input\[1\]` must hold exactly 2 tensors \(a, b\), got 3"):
        loss([(a, a), (a, a, a)])
    with pytest.raises(ValueError, match=r"`input\[1\]\[0\]` and `input\[1\]\[1\]` must have identical shapes, "):
        loss([(a, a), (a, torch.randn(2, 4))])
    with pytest.raises(ValueError, match=r"`input` and `target` must have identical shapes, got \(2, 3\) and \(2,\)"):
        loss(a, torch.randn(2))


# ----------------------------------------------------------------------------------------------------------------
# Non-finite features and foreign inputs (issue 14)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_raise_where_they_enter(bad: float) -> None:
    good = torch.randn(2, 3, 5, 4)
    poisoned = good.clone()
    poisoned[1, 2, 3, 0] = bad
    kind = "NaN" if bad != bad else "inf"
    with pytest.raises(ValueError, match=rf"`target` is not finite \(holds {kind}\)"):
        mutual_distillation_loss(good, poisoned)
    with pytest.raises(ValueError, match=rf"`input` is not finite \(holds {kind}\)"):
        MutualDistillationLoss()(poisoned, good)
    with pytest.raises(ValueError, match=rf"`input\[1\]\[0\]` is not finite \(holds {kind}\)"):
        MutualDistillationLoss()([(good, good), (poisoned, good)])


def test_numpy_inputs_are_named_as_such() -> None:
    np = pytest.importorskip("numpy")
    a, b = np.zeros((2, 3)), np.zeros((2, 3))
    with pytest.raises(TypeError, match=r"`input` must be a torch\.Tensor like `target`, got numpy\.ndarray of shape"):
        MutualDistillationLoss()(a, b)
    with pytest.raises(TypeError, match=r"`target` must be a torch\.Tensor, got numpy\.ndarray of shape \(2, 3\)"):
        MutualDistillationLoss()(torch.zeros(2, 3), b)
    with pytest.raises(TypeError, match=r"`input` must be a torch\.Tensor or a sequence of \(a, b\) tensor pairs"):
        MutualDistillationLoss()(a)
    with pytest.raises(TypeError, match=r"`input` must be a torch\.Tensor, got numpy\.ndarray"):
        mutual_distillation_loss(a, torch.zeros(2, 3))


def test_distance_names_are_distinct_and_old_names_deprecated() -> None:
    import hmdc_modules.functional.distillation as fd
    import hmdc_modules.functional.matching as fm

    assert fd.FEATURE_DISTANCES == ("mse", "l1", "smooth_l1")
    assert fm.GRADIENT_DISTANCES == ("sse", "mse", "cosine", "dc")
    with pytest.warns(DeprecationWarning, match="FEATURE_DISTANCES"):
        assert fd.DISTANCES is fd.FEATURE_DISTANCES
    with pytest.warns(DeprecationWarning, match="GRADIENT_DISTANCES"):
        assert fm.DISTANCES is fm.GRADIENT_DISTANCES
    with pytest.raises(ValueError, match=r"`distance` must be one of 'mse', 'l1', 'smooth_l1', got 'sse'"):
        MutualDistillationLoss(distance="sse")

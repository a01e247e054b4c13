"""Tests for SpatialSemanticDecomposer against slow, loop-based references."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hmdc_modules.decomposition import SpatialSemanticDecomposer
from hmdc_modules.features import AdapterOutput, FeatureMap, FeatureSpec

# ---------------------------------------------------------------------------------------------------- helpers


def make_features(
    specs: list[FeatureSpec], batch: int, *, dtype: torch.dtype = torch.float32, seed: int = 0
) -> list[FeatureMap]:
    gen = torch.Generator().manual_seed(seed)
    return [
        FeatureMap(
            torch.randn(batch, sp.channels, generator=gen, dtype=dtype),
            torch.randn(batch, sp.channels, sp.height, sp.width, generator=gen, dtype=dtype),
        )
        for sp in specs
    ]


def randomize_matching(dec: SpatialSemanticDecomposer, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for matrix in dec.layer_matching:
            matrix.copy_(2.0 * torch.randn(matrix.shape, generator=gen))


def ref_bilinear(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear resize with align_corners=True, one output pixel at a time ([C, H, W] -> [C, side, side])."""
    channels, height, width = x.shape
    out = torch.empty(channels, side, side, dtype=x.dtype)
    for r in range(side):
        y = 0.0 if side == 1 else r * (height - 1) / (side - 1)
        y0 = min(math.floor(y), height - 1)
        y1 = min(y0 + 1, height - 1)
        wy = y - y0
        for c in range(side):
            xx = 0.0 if side == 1 else c * (width - 1) / (side - 1)
            x0 = min(math.floor(xx), width - 1)
            x1 = min(x0 + 1, width - 1)
            wx = xx - x0
            out[:, r, c] = (
                (1 - wy) * (1 - wx) * x[:, y0, x0]
                + (1 - wy) * wx * x[:, y0, x1]
                + wy * (1 - wx) * x[:, y1, x0]
                + wy * wx * x[:, y1, x1]
            )
    return out


def ref_project(dec: SpatialSemanticDecomposer, m: int, feats: list[FeatureMap]) -> torch.Tensor:
    """Per layer, per sample, per position: W x + b by hand."""
    s, d = dec.side, dec.dim
    batch = feats[0].semantic.shape[0]
    out = torch.empty(batch, len(feats), 1 + s * s, d, dtype=feats[0].semantic.dtype)
    with torch.no_grad():
        for layer, fm in enumerate(feats):
            weight, bias = dec.projections[m][layer].weight, dec.projections[m][layer].bias
            for b in range(batch):
                spatial = ref_bilinear(fm.spatial[b], s)
                out[b, layer, 0] = weight @ fm.semantic[b] + bias
                for r in range(s):
                    for c in range(s):
                        out[b, layer, 1 + r * s + c] = weight @ spatial[:, r, c] + bias
    return out


def ref_softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def ref_align(
    matrix: torch.Tensor, f_i: torch.Tensor, f_j: torch.Tensor, axis: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix the model with more layers onto the other's axis (model i is the source on ties), double loop."""
    l_i, l_j = matrix.shape
    source_is_i = l_i >= l_j
    l_src, l_tgt = (l_i, l_j) if source_is_i else (l_j, l_i)

    def entry(t: int, s: int) -> float:  # M entry linking target layer t and source layer s
        return float(matrix[s, t]) if source_is_i else float(matrix[t, s])

    weights = [[0.0] * l_src for _ in range(l_tgt)]  # weights[t][s]
    if axis == "target":
        for s in range(l_src):
            column = ref_softmax([entry(t, s) for t in range(l_tgt)])
            for t in range(l_tgt):
                weights[t][s] = column[t]
    else:
        for t in range(l_tgt):
            weights[t] = ref_softmax([entry(t, s) for s in range(l_src)])
    src = f_i if source_is_i else f_j
    mixed = torch.zeros(src.shape[0], l_tgt, *src.shape[2:], dtype=src.dtype)
    for t in range(l_tgt):
        for s in range(l_src):
            mixed[:, t] += weights[t][s] * src[:, s]
    return (mixed, f_j) if source_is_i else (f_i, mixed)


def specs_of(layers: list[tuple[int, int, int]], prefix: str) -> list[FeatureSpec]:
    return [FeatureSpec(f"{prefix}{k}", c, h, w) for k, (c, h, w) in enumerate(layers)]


class FakeAdapter:
    """Duck-typed adapter: a ViT-like model whose grid depends on the image size."""

    def __init__(self, channels: list[int], patch: int) -> None:
        self.channels, self.patch, self.calls = channels, patch, []

    def feature_specs(self, image_size: int | tuple[int, int]) -> tuple[FeatureSpec, ...]:
        self.calls.append(image_size)
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        return tuple(FeatureSpec(f"block{k}", c, h // self.patch, w // self.patch) for k, c in enumerate(self.channels))


SPEC_A = specs_of([(3, 5, 5), (4, 3, 2)], "a")  # 2 layers, non-square second layer
SPEC_B = specs_of([(5, 4, 4), (2, 2, 2), (3, 3, 3), (4, 6, 6)], "b")  # 4 layers, one already at side 2
SPEC_C = specs_of([(2, 2, 3), (3, 4, 4)], "c")  # 2 layers


# ---------------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("axis", ["target", "source"])
@pytest.mark.parametrize(
    ("specs_i", "specs_j"),
    [(SPEC_A, SPEC_B), (SPEC_B, SPEC_A), (SPEC_A, SPEC_C)],
    ids=["Li<Lj", "Li>Lj", "Li==Lj"],
)
def test_matches_slow_reference_two_models(specs_i, specs_j, axis):
    torch.manual_seed(0)
    dec = SpatialSemanticDecomposer([specs_i, specs_j], softmax_axis=axis)
    assert dec.side == 2 and dec.dim == 2
    randomize_matching(dec)
    feats_i, feats_j = make_features(specs_i, 3, seed=1), make_features(specs_j, 3, seed=2)
    [(a_i, a_j)] = dec([feats_i, feats_j])
    r_i, r_j = ref_project(dec, 0, feats_i), ref_project(dec, 1, feats_j)
    torch.testing.assert_close(dec.project(0, feats_i), r_i)
    torch.testing.assert_close(dec.project(1, feats_j), r_j)
    e_i, e_j = ref_align(dec.layer_matching[0].detach(), r_i, r_j, axis)
    low = min(len(specs_i), len(specs_j))
    assert a_i.shape == a_j.shape == (3, low, 5, 2)
    torch.testing.assert_close(a_i, e_i)
    torch.testing.assert_close(a_j, e_j)


@pytest.mark.parametrize("axis", ["target", "source"])
@pytest.mark.parametrize(
    ("mode", "expected_pairs"), [("all", ((0, 1), (0, 2), (1, 2))), ("chain", ((0, 1), (1, 2))), ([(2, 0)], ((2, 0),))]
)
def test_matches_slow_reference_three_models(mode, expected_pairs, axis):
    torch.manual_seed(0)
    specs = [SPEC_A, SPEC_B, SPEC_C]
    dec = SpatialSemanticDecomposer(specs, pairs=mode, softmax_axis=axis, side=3, dim=3)
    assert dec.pairs == expected_pairs and dec.num_models == 3
    assert [tuple(m.shape) for m in dec.layer_matching] == [(len(specs[i]), len(specs[j])) for i, j in expected_pairs]
    randomize_matching(dec)
    feats = [make_features(sp, 2, seed=k) for k, sp in enumerate(specs)]
    out = dec(feats)
    assert len(out) == len(expected_pairs)
    refs = [ref_project(dec, m, feats[m]) for m in range(3)]
    for k, (i, j) in enumerate(expected_pairs):
        e_i, e_j = ref_align(dec.layer_matching[k].detach(), refs[i], refs[j], axis)
        torch.testing.assert_close(out[k][0], e_i)
        torch.testing.assert_close(out[k][1], e_j)
        # align on projected inputs gives the same as forward
        a_i, a_j = dec.align(i, j, dec.project(i, feats[i]), dec.project(j, feats[j]))
        torch.testing.assert_close(a_i, e_i)
        torch.testing.assert_close(a_j, e_j)


def test_token_layout_semantic_first_then_row_major():
    # Identity projection: tokens are the raw features, so the layout is visible directly.
    specs = [specs_of([(2, 2, 2)], "a"), specs_of([(2, 2, 2)], "b")]
    dec = SpatialSemanticDecomposer(specs)
    with torch.no_grad():
        for proj in (dec.projections[0][0], dec.projections[1][0]):
            proj.weight.copy_(torch.eye(2))
            proj.bias.zero_()
    semantic = torch.tensor([[100.0, 200.0]])
    spatial = torch.arange(8.0).reshape(1, 2, 2, 2)
    f = dec.project(0, [FeatureMap(semantic, spatial)])
    expected = torch.tensor([[100.0, 200.0], [0.0, 4.0], [1.0, 5.0], [2.0, 6.0], [3.0, 7.0]])
    torch.testing.assert_close(f[0, 0], expected)


def test_accepts_adapter_output_and_runtime_spatial_size():
    dec = SpatialSemanticDecomposer([SPEC_A, SPEC_C])
    feats = make_features(SPEC_A, 2)
    direct = dec.project(0, feats)
    wrapped = dec.project(0, AdapterOutput(torch.zeros(2, 10), tuple(feats)))
    torch.testing.assert_close(direct, wrapped)
    # spatial sizes other than the probed ones are resized too
    bigger = [FeatureMap(fm.semantic, torch.randn(2, fm.spatial.shape[1], 7, 9)) for fm in feats]
    torch.testing.assert_close(dec.project(0, bigger), ref_project(dec, 0, bigger))


# ---------------------------------------------------------------------------------------------------- init


@pytest.mark.parametrize(("specs_i", "specs_j"), [(SPEC_A, SPEC_B), (SPEC_B, SPEC_A), (SPEC_A, SPEC_C)])
def test_zero_init_target_axis_sends_one_over_l_target(specs_i, specs_j):
    dec = SpatialSemanticDecomposer([specs_i, specs_j])
    feats_i, feats_j = make_features(specs_i, 2, seed=3), make_features(specs_j, 2, seed=4)
    f_i, f_j = dec.project(0, feats_i), dec.project(1, feats_j)
    a_i, a_j = dec.align(0, 1, f_i, f_j)
    src, tgt, mixed, kept = (f_i, f_j, a_i, a_j) if len(specs_i) >= len(specs_j) else (f_j, f_i, a_j, a_i)
    l_src, l_tgt = src.shape[1], tgt.shape[1]
    torch.testing.assert_close(kept, tgt)
    expected = src.sum(dim=1) / l_tgt  # = (L_src / L_tgt) * mean source layer
    for t in range(l_tgt):
        torch.testing.assert_close(mixed[:, t], expected)
        torch.testing.assert_close(mixed[:, t], (l_src / l_tgt) * src.mean(dim=1))


@pytest.mark.parametrize(("specs_i", "specs_j"), [(SPEC_A, SPEC_B), (SPEC_B, SPEC_A), (SPEC_A, SPEC_C)])
def test_zero_init_source_axis_is_mean_of_source_layers(specs_i, specs_j):
    dec = SpatialSemanticDecomposer([specs_i, specs_j], softmax_axis="source")
    f_i = dec.project(0, make_features(specs_i, 2, seed=5))
    f_j = dec.project(1, make_features(specs_j, 2, seed=6))
    a_i, a_j = dec.align(0, 1, f_i, f_j)
    src, mixed = (f_i, a_i) if len(specs_i) >= len(specs_j) else (f_j, a_j)
    for t in range(mixed.shape[1]):
        torch.testing.assert_close(mixed[:, t], src.mean(dim=1))


@pytest.mark.parametrize("axis", ["target", "source"])
@pytest.mark.parametrize(("specs_i", "specs_j"), [(SPEC_A, SPEC_B), (SPEC_B, SPEC_A), (SPEC_A, SPEC_C)])
def test_mixing_weights_normalised_over_the_documented_axis(specs_i, specs_j, axis):
    dec = SpatialSemanticDecomposer([specs_i, specs_j], softmax_axis=axis)
    randomize_matching(dec)
    weights = dec.mixing_weights(0)
    assert weights.shape == (len(specs_i), len(specs_j))
    target_dim = 0 if len(specs_i) < len(specs_j) else 1
    dim = target_dim if axis == "target" else 1 - target_dim
    torch.testing.assert_close(weights.sum(dim=dim), torch.ones(weights.shape[1 - dim]))
    assert not torch.allclose(weights.sum(dim=1 - dim), torch.ones(weights.shape[dim]))


def test_reset_parameters_zeroes_matching_and_redraws_projections():
    dec = SpatialSemanticDecomposer([SPEC_A, SPEC_B])
    randomize_matching(dec)
    params_before = {name: id(p) for name, p in dec.named_parameters()}
    weights_before = [p.detach().clone() for p in dec.projections.parameters()]
    torch.manual_seed(123)
    dec.reset_parameters()
    assert all(bool((m == 0).all()) for m in dec.layer_matching)
    assert {name: id(p) for name, p in dec.named_parameters()} == params_before  # in place
    for before, after in zip(weights_before, dec.projections.parameters(), strict=True):
        assert not torch.equal(before, after)
    # PyTorch default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    for model_projections in dec.projections:
        for proj in model_projections:
            bound = 1.0 / math.sqrt(proj.in_features)
            assert proj.weight.abs().max() <= bound and proj.bias.abs().max() <= bound


def test_parameter_counts_and_repr():
    dec = SpatialSemanticDecomposer([SPEC_A, SPEC_B, SPEC_C], pairs="chain")
    assert [len(p) for p in dec.projections] == [2, 4, 2]
    assert dec.projections[1][3].in_features == 4 and dec.projections[1][3].out_features == 2
    assert dec.num_layers == (2, 4, 2) and dec.num_tokens == 5
    text = repr(dec)
    assert "side=2" in text and "dim=2" in text and "softmax_axis='target'" in text and "pairs=((0, 1), (1, 2))" in text


# ---------------------------------------------------------------------------------------------------- sizes


def test_sizes_inferred_from_feature_specs_objects():
    cnn = FakeAdapter([6, 6, 6], patch=4)  # 8x8 at 32
    vit = FakeAdapter([9, 9], patch=16)  # 2x2 at 32
    dec = SpatialSemanticDecomposer([cnn, vit], image_size=32)
    assert cnn.calls == [32] and vit.calls == [32]
    assert (dec.side, dec.dim) == (2, 6)
    assert dec.specs[1][0] == FeatureSpec("block0", 9, 2, 2)
    assert not any(isinstance(m, FakeAdapter) for m in dec.modules())
    dec2 = SpatialSemanticDecomposer([cnn, vit], image_size=(64, 128))
    assert vit.calls[-1] == (64, 128) and dec2.side == 4 and dec2.image_size == (64, 128)


def test_non_square_side_and_overrides():
    specs = [specs_of([(8, 6, 3)], "a"), specs_of([(5, 10, 10)], "b")]
    assert SpatialSemanticDecomposer(specs).side == 3
    dec = SpatialSemanticDecomposer(specs, side=5, dim=7)
    assert (dec.side, dec.dim) == (5, 7)
    out = dec([make_features(specs[0], 1), make_features(specs[1], 1)])
    assert out[0][0].shape == (1, 1, 26, 7)


@settings(deadline=None, max_examples=20)
@given(
    layers=st.lists(
        st.lists(
            st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
            min_size=1,
            max_size=4,
        ),
        min_size=2,
        max_size=3,
    ),
    batch=st.integers(1, 2),
)
def test_property_shapes_and_fewer_layer_side_unchanged(layers, batch):
    specs = [specs_of(model, f"m{k}") for k, model in enumerate(layers)]
    dec = SpatialSemanticDecomposer(specs)
    s = min(min(h, w) for model in layers for _, h, w in model)
    d = min(c for model in layers for c, _, _ in model)
    assert (dec.side, dec.dim) == (s, d)
    feats = [make_features(sp, batch, seed=k) for k, sp in enumerate(specs)]
    out = dec(feats)
    for (i, j), (a_i, a_j) in zip(dec.pairs, out, strict=True):
        low = min(len(specs[i]), len(specs[j]))
        assert a_i.shape == a_j.shape == (batch, low, 1 + s * s, d)
        if len(specs[i]) < len(specs[j]):
            torch.testing.assert_close(a_i, dec.project(i, feats[i]))
        else:
            torch.testing.assert_close(a_j, dec.project(j, feats[j]))


# ---------------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("axis", ["target", "source"])
def test_gradcheck_features_matching_and_projection(axis):
    specs = [specs_of([(2, 3, 3), (3, 2, 2)], "a"), specs_of([(3, 2, 3), (2, 2, 2), (2, 4, 4)], "b")]
    dec = SpatialSemanticDecomposer(specs, softmax_axis=axis).double()
    randomize_matching(dec)
    feats = [make_features(sp, 1, dtype=torch.float64, seed=k) for k, sp in enumerate(specs)]
    leaves = [t.clone().requires_grad_(True) for model in feats for fm in model for t in fm]
    matrix = dec.layer_matching[0].detach().clone().requires_grad_(True)
    weight = dec.projections[1][2].weight.detach().clone().requires_grad_(True)

    def fn(matrix, weight, *flat):
        it = iter(flat)
        rebuilt = [[FeatureMap(next(it), next(it)) for _ in model] for model in specs]
        params = {"layer_matching.0": matrix, "projections.1.2.weight": weight}
        [(a_i, a_j)] = torch.func.functional_call(dec, params, (rebuilt,))
        return a_i, a_j

    assert torch.autograd.gradcheck(fn, (matrix, weight, *leaves))


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"models": [SPEC_A]}, ValueError, "at least 2 models"),
        ({"models": FakeAdapter([2], 4)}, TypeError, "single FakeAdapter"),
        ({"models": 3}, TypeError, "`models` must be a sequence"),
        ({"models": [SPEC_A, 5]}, TypeError, r"`models\[1\]` must be a sequence of FeatureSpec"),
        ({"models": [SPEC_A, []]}, ValueError, r"`models\[1\]` must describe at least one tapped layer"),
        ({"models": [SPEC_A, [(3, 2, 2)]]}, TypeError, r"`models\[1\]\[0\]` must be a FeatureSpec"),
        ({"models": [SPEC_A, [FeatureSpec("x", 0, 2, 2)]]}, ValueError, r"`models\[1\]\[0\].channels` must be >= 1"),
        ({"models": [SPEC_A, FakeAdapter([], 4)]}, ValueError, r"models\[1\].feature_specs\(image_size\)"),
        ({"image_size": 0}, ValueError, "`image_size` must be >= 1"),
        ({"image_size": (32,)}, ValueError, "`image_size` must be an int or a"),
        ({"image_size": "32"}, TypeError, "`image_size` must be an int"),
        ({"image_size": (32, 2.5)}, TypeError, r"`image_size\[1\]` must be an int"),
        ({"side": 0}, ValueError, "`side` must be >= 1"),
        ({"side": 2.0}, TypeError, "`side` must be an int"),
        ({"dim": 0}, ValueError, "`dim` must be >= 1"),
        ({"dim": True}, TypeError, "`dim` must be an int"),
        ({"softmax_axis": "rows"}, ValueError, "`softmax_axis` must be one of 'target', 'source', got 'rows'"),
        ({"pairs": "ring"}, ValueError, "`pairs` must be one of 'all', 'chain'"),
        ({"pairs": []}, ValueError, "`pairs` must hold at least one"),
        ({"pairs": [(0, 0)]}, ValueError, "pairs a model with itself"),
        ({"pairs": [(0, 2)]}, ValueError, r"outside \[0, 1\]"),
        ({"pairs": [(0, 1), (1, 0)]}, ValueError, r"`pairs\[1\]`.*repeats"),
        ({"pairs": [(0, 1, 2)]}, ValueError, r"`pairs\[0\]` must be an \(i, j\) pair"),
        ({"pairs": [(0, 1.0)]}, TypeError, r"`pairs\[0\]` must hold int model indices"),
        ({"pairs": 5}, TypeError, "`pairs` must be a sequence"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    kwargs = {"models": [SPEC_A, SPEC_C], **kwargs}
    with pytest.raises(error, match=match):
        SpatialSemanticDecomposer(**kwargs)


@pytest.fixture
def dec() -> SpatialSemanticDecomposer:
    return SpatialSemanticDecomposer([SPEC_A, SPEC_B])


def _with(feats: list[FeatureMap], layer: int, semantic=None, spatial=None) -> list[FeatureMap]:
    out = list(feats)
    fm = out[layer]
    out[layer] = FeatureMap(fm.semantic if semantic is None else semantic, fm.spatial if spatial is None else spatial)
    return out


def test_bad_features_count_and_layers(dec):
    fa, fb = make_features(SPEC_A, 2), make_features(SPEC_B, 2)
    with pytest.raises(ValueError, match=r"one entry per model \(2 models\), got 1"):
        dec([fa])
    with pytest.raises(ValueError, match=r"`features\[1\]` must hold 4 feature maps for model 1.*got 3"):
        dec([fa, fb[:3]])
    with pytest.raises(ValueError, match=r"`features` must hold 2 feature maps for model 0.*got 4"):
        dec.project(0, fb)
    with pytest.raises(TypeError, match="`features` must be a sequence"):
        dec(torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"`features\[0\]\[1\]` must be a FeatureMap"):
        dec([[fa[0], torch.zeros(2, 4)], fb])
    with pytest.raises(TypeError, match=r"`features\[0\]` must be a sequence"):
        dec([None, fb])


def test_bad_channel_count_names_model_and_layer(dec):
    fa, fb = make_features(SPEC_A, 2), make_features(SPEC_B, 2)
    with pytest.raises(ValueError, match=r"`features\[1\]\[2\].semantic` of model 1 layer 2 \('b2'\) must have 3"):
        dec([fa, _with(fb, 2, semantic=torch.randn(2, 5))])
    with pytest.raises(ValueError, match=r"`features\[0\]\[1\].spatial` of model 0 layer 1 \('a1'\) must have 4.*"):
        dec([_with(fa, 1, spatial=torch.randn(2, 3, 3, 2)), fb])


def test_bad_ranks_and_dtypes(dec):
    fa, fb = make_features(SPEC_A, 2), make_features(SPEC_B, 2)
    with pytest.raises(
        ValueError, match=r"`features\[0\]\[0\].spatial` must have 4 dimensions, got shape \(2, 3, 25\)"
    ):
        dec([_with(fa, 0, spatial=torch.randn(2, 3, 25)), fb])
    with pytest.raises(
        ValueError, match=r"`features\[0\]\[0\].semantic` must have 2 dimensions, got shape \(2, 3, 1\)"
    ):
        dec([_with(fa, 0, semantic=torch.randn(2, 3, 1)), fb])
    with pytest.raises(TypeError, match=r"`features\[0\]\[0\].semantic` must have a floating-point dtype"):
        dec([_with(fa, 0, semantic=torch.ones(2, 3, dtype=torch.long)), fb])
    with pytest.raises(TypeError, match=r"`features\[0\]\[0\].spatial` must be a torch.Tensor"):
        dec([_with(fa, 0, spatial=[1.0]), fb])


def test_bad_batch_sizes(dec):
    fa, fb = make_features(SPEC_A, 2), make_features(SPEC_B, 2)
    with pytest.raises(ValueError, match=r"`features\[0\]\[1\].semantic` and `features\[0\]\[1\].spatial` must have"):
        dec([_with(fa, 1, semantic=torch.randn(3, 4)), fb])
    with pytest.raises(ValueError, match=r"all layers of model 0 must share one batch size, got 2 .* 3 for"):
        dec([_with(fa, 1, semantic=torch.randn(3, 4), spatial=torch.randn(3, 4, 3, 2)), fb])
    with pytest.raises(ValueError, match=r"all models must share one batch size, got 2 .* and 3 for `features\[1\]`"):
        dec([fa, make_features(SPEC_B, 3)])


def test_bad_align_project_and_mixing_arguments(dec):
    f0 = dec.project(0, make_features(SPEC_A, 2))
    f1 = dec.project(1, make_features(SPEC_B, 2))
    with pytest.raises(ValueError, match=r"`\(i, j\)` = \(1, 0\) is not one of the decomposer's pairs"):
        dec.align(1, 0, f1, f0)
    with pytest.raises(TypeError, match="`i` must be an int"):
        dec.align(0.0, 1, f0, f1)
    with pytest.raises(ValueError, match=r"`f_i` must have shape \(B, 2, 5, 2\) for model 0, got \(2, 4, 5, 2\)"):
        dec.align(0, 1, f1, f1)
    with pytest.raises(ValueError, match=r"`f_j` must have 4 dimensions"):
        dec.align(0, 1, f0, f1[0])
    with pytest.raises(ValueError, match=r"same batch size, got shapes \(1, 2, 5, 2\) and \(2, 4, 5, 2\)"):
        dec.align(0, 1, f0[:1], f1)
    with pytest.raises(ValueError, match=r"`model_index` must be in \[0, 1\], got 2"):
        dec.project(2, [])
    with pytest.raises(TypeError, match="`model_index` must be an int"):
        dec.project(True, [])
    with pytest.raises(ValueError, match=r"`pair_index` must be in \[0, 0\], got 1"):
        dec.mixing_weights(1)
    with pytest.raises(TypeError, match="`pair_index` must be an int"):
        dec.mixing_weights("0")


# ----------------------------------------------------------------------------------------------------------------
# Non-finite features (issue 14)


@pytest.mark.parametrize(("part", "bad"), [("semantic", float("nan")), ("spatial", float("inf"))])
def test_non_finite_features_raise_where_they_enter(part: str, bad: float) -> None:
    cnn = [FeatureSpec("a", 4, 8, 8), FeatureSpec("b", 4, 4, 4)]
    vit = [FeatureSpec(f"v{k}", 6, 4, 4) for k in range(3)]
    dec = SpatialSemanticDecomposer([cnn, vit])
    f_cnn, f_vit = make_features(cnn, 2), make_features(vit, 2, seed=1)
    poisoned = list(f_vit)
    tensor = getattr(poisoned[2], part).clone()
    tensor.view(-1)[3] = bad
    poisoned[2] = poisoned[2]._replace(**{part: tensor})
    kind = "NaN" if bad != bad else "inf"
    with pytest.raises(ValueError, match=rf"`features\[1\]\[2\]\.{part}` is not finite \(holds {kind}\)"):
        dec([f_cnn, poisoned])
    with pytest.raises(ValueError, match=rf"`features\[2\]\.{part}` is not finite"):
        dec.project(1, poisoned)
    assert dec([f_cnn, f_vit])[0][0].isfinite().all()  # finite features pass

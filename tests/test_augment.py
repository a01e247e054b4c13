"""Tests for the differentiable augmentation and cutmix (hmdc_modules.condensation.augment)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hmdc_modules.condensation.augment import GEOMETRIC_OPS, AugmentParams, CutMix, DifferentiableAugment, cutmix

SETTINGS = settings(deadline=None, max_examples=20)


# ---------------------------------------------------------------------------------------------------------------
# helpers and slow references


def identity_params(batch: int) -> AugmentParams:
    """Parameters that leave images unchanged."""
    return AugmentParams(
        flip=torch.zeros(batch, dtype=torch.bool),
        brightness=torch.zeros(batch),
        saturation=torch.ones(batch),
        contrast=torch.ones(batch),
        geometric=torch.full((batch,), -1, dtype=torch.long),
        translation=torch.zeros(batch, 2),
        scale=torch.ones(batch, 2),
        angle=torch.zeros(batch),
        cutout_center=torch.zeros(batch, 2),
        cutout_size=torch.zeros(batch),
    )


def only_stage(params: AugmentParams, stage: str) -> AugmentParams:
    """Keep one stage of ``params`` ("flip", "color", "geometric" or "cutout"); the rest identity."""
    ident = identity_params(params.batch_size)
    keep = {
        "flip": ("flip",),
        "color": ("brightness", "saturation", "contrast"),
        "geometric": ("geometric", "translation", "scale", "angle"),
        "cutout": ("cutout_center", "cutout_size"),
    }[stage]
    return ident._replace(**{name: getattr(params, name) for name in keep})


def bilinear_zero_pad_sample(img: torch.Tensor, col: float, row: float) -> torch.Tensor:
    """Bilinear sample of img (C, H, W) at fractional pixel (row, col); pixels outside the image are zero."""
    _, height, width = img.shape
    c0, r0 = math.floor(col), math.floor(row)
    wc, wr = col - c0, row - r0
    out = torch.zeros(img.shape[0], dtype=img.dtype)
    for dr, weight_r in ((0, 1 - wr), (1, wr)):
        for dc, weight_c in ((0, 1 - wc), (1, wc)):
            r, c = r0 + dr, c0 + dc
            if 0 <= r < height and 0 <= c < width:
                out = out + weight_r * weight_c * img[:, r, c]
    return out


def geometric_ref(
    img: torch.Tensor, shift: tuple[int, int], scale: tuple[float, float], degrees: float
) -> torch.Tensor:
    """Per-pixel reference of the documented geometric transform.

    The content is scaled by (sx, sy) about the centre, rotated counter-clockwise as displayed by ``degrees``,
    then shifted by ``shift`` = (kx, ky) pixels (right, down); output pixel p reads input pixel forward^-1(p).
    """
    _, height, width = img.shape
    a = math.radians(degrees)
    # Forward content rotation, y axis pointing down: (1, 0) (right) moves to (cos, -sin) (up for a > 0).
    rotation = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64)
    forward = rotation @ torch.diag(torch.tensor(scale, dtype=torch.float64))
    inverse = torch.linalg.inv(forward)
    out = torch.zeros_like(img)
    for i in range(height):
        for j in range(width):
            p = torch.tensor([j + 0.5 - width / 2 - shift[0], i + 0.5 - height / 2 - shift[1]], dtype=torch.float64)
            q = inverse @ p
            out[:, i, j] = bilinear_zero_pad_sample(img, float(q[0]) + width / 2 - 0.5, float(q[1]) + height / 2 - 0.5)
    return out


def shift_ref(img: torch.Tensor, kx: int, ky: int) -> torch.Tensor:
    """Integer shift with zero fill: out[i, j] = img[i - ky, j - kx]."""
    _, height, width = img.shape
    out = torch.zeros_like(img)
    for i in range(height):
        for j in range(width):
            if 0 <= i - ky < height and 0 <= j - kx < width:
                out[:, i, j] = img[:, i - ky, j - kx]
    return out


def cutout_box_ref(height: int, width: int, center: tuple[float, float], ratio: float) -> set[tuple[int, int]]:
    """Pixels zeroed by cutout, from the documented rule (round-half-up side, centre pixel floor(u * side))."""
    side_w, side_h = math.floor(ratio * width + 0.5), math.floor(ratio * height + 0.5)
    cx, cy = min(math.floor(center[0] * width), width - 1), min(math.floor(center[1] * height), height - 1)
    x0, y0 = cx - side_w // 2, cy - side_h // 2
    return {(i, j) for i in range(height) for j in range(width) if y0 <= i < y0 + side_h and x0 <= j < x0 + side_w}


# ---------------------------------------------------------------------------------------------------------------
# single ops against references


def test_flip_equals_torch_flip_per_sample() -> None:
    x = torch.rand(4, 3, 5, 6)
    params = identity_params(4)._replace(flip=torch.tensor([True, False, True, False]))
    out = DifferentiableAugment()(x, params=params)
    torch.testing.assert_close(out[0::2], torch.flip(x[0::2], dims=[-1]), rtol=0, atol=0)
    torch.testing.assert_close(out[1::2], x[1::2], rtol=0, atol=0)


@SETTINGS
@given(
    channels=st.integers(1, 4),
    brightness=st.floats(-0.5, 0.5),
    saturation=st.floats(0.0, 2.0),
    contrast=st.floats(0.5, 1.5),
    seed=st.integers(0, 2**16),
)
def test_colour_ops_match_explicit_formulas(
    channels: int, brightness: float, saturation: float, contrast: float, seed: int
) -> None:
    x = torch.rand(2, channels, 3, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    aug = DifferentiableAugment()
    ident = identity_params(2)

    out = aug(x, params=ident._replace(brightness=torch.tensor([brightness, 0.0])))
    expected = x.clone()
    expected[0] = x[0] + brightness
    torch.testing.assert_close(out, expected)

    out = aug(x, params=ident._replace(saturation=torch.tensor([saturation, 1.0])))
    expected = x.clone()
    for i in range(3):
        for j in range(4):
            mean = sum(float(x[0, c, i, j]) for c in range(channels)) / channels
            for c in range(channels):
                expected[0, c, i, j] = (float(x[0, c, i, j]) - mean) * saturation + mean
    torch.testing.assert_close(out, expected)
    if channels == 1:  # saturation cannot change a single-channel image
        torch.testing.assert_close(out, x)

    out = aug(x, params=ident._replace(contrast=torch.tensor([contrast, 1.0])))
    expected = x.clone()
    mean = float(x[0].sum()) / x[0].numel()
    for c in range(channels):
        for i in range(3):
            for j in range(4):
                expected[0, c, i, j] = (float(x[0, c, i, j]) - mean) * contrast + mean
    torch.testing.assert_close(out, expected)


@SETTINGS
@given(
    height=st.integers(3, 7),
    width=st.integers(3, 7),
    kx=st.integers(-3, 3),
    ky=st.integers(-3, 3),
    seed=st.integers(0, 2**16),
)
def test_crop_is_an_integer_shift_with_zero_padding(height: int, width: int, kx: int, ky: int, seed: int) -> None:
    x = torch.rand(1, 2, height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    params = identity_params(1)._replace(
        geometric=torch.tensor([0]), translation=torch.tensor([[kx / width, ky / height]], dtype=torch.float64)
    )
    out = DifferentiableAugment()(x, params=params)
    torch.testing.assert_close(out[0], shift_ref(x[0], kx, ky), atol=1e-6, rtol=0)


def test_crop_rounds_fractional_shifts_to_whole_pixels() -> None:
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    params = identity_params(1)._replace(translation=torch.tensor([[0.3 / 8, -1.6 / 8]], dtype=torch.float64))
    out = DifferentiableAugment()(x, params=params)
    torch.testing.assert_close(out[0], shift_ref(x[0], 0, -2), atol=1e-6, rtol=0)


@SETTINGS
@given(
    height=st.integers(4, 7),
    width=st.integers(4, 7),
    sx=st.floats(0.6, 1.6),
    sy=st.floats(0.6, 1.6),
    degrees=st.floats(-180.0, 180.0),
    kx=st.integers(-2, 2),
    ky=st.integers(-2, 2),
    seed=st.integers(0, 2**16),
)
def test_geometric_matches_per_pixel_reference(
    height: int, width: int, sx: float, sy: float, degrees: float, kx: int, ky: int, seed: int
) -> None:
    x = torch.rand(1, 2, height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    params = identity_params(1)._replace(
        translation=torch.tensor([[kx / width, ky / height]], dtype=torch.float64),
        scale=torch.tensor([[sx, sy]], dtype=torch.float64),
        angle=torch.tensor([degrees], dtype=torch.float64),
    )
    out = DifferentiableAugment()(x, params=params)
    torch.testing.assert_close(out[0], geometric_ref(x[0], (kx, ky), (sx, sy), degrees), atol=1e-6, rtol=1e-6)


def test_rotation_by_ninety_degrees_is_rot90_counter_clockwise() -> None:
    x = torch.rand(2, 3, 6, 6)
    params = identity_params(2)._replace(angle=torch.tensor([90.0, -90.0]))
    out = DifferentiableAugment()(x, params=params)
    torch.testing.assert_close(out[0], torch.rot90(x[0], 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], torch.rot90(x[1], -1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_zero_rotation_and_unit_scale_are_identity_through_grid_sample() -> None:
    # Sample 0 forces the resampling path; samples 1 and 2 (angle 0, scale 1) must come out unchanged.
    x = torch.rand(3, 3, 9, 7)
    params = identity_params(3)._replace(
        geometric=torch.tensor([2, 2, 1]),
        angle=torch.tensor([30.0, 0.0, 0.0]),
    )
    out = DifferentiableAugment()(x, params=params)
    torch.testing.assert_close(out[1:], x[1:], atol=1e-5, rtol=0)
    assert not torch.allclose(out[0], x[0], atol=1e-2)


@SETTINGS
@given(
    height=st.integers(2, 9),
    width=st.integers(2, 9),
    ux=st.floats(0.0, 0.999),
    uy=st.floats(0.0, 0.999),
    ratio=st.floats(0.0, 1.0),
)
def test_cutout_zeroes_exactly_the_square(height: int, width: int, ux: float, uy: float, ratio: float) -> None:
    x = torch.rand(1, 2, height, width, dtype=torch.float64) + 0.5  # strictly positive
    params = identity_params(1)._replace(
        cutout_center=torch.tensor([[ux, uy]], dtype=torch.float64), cutout_size=torch.tensor([ratio])
    )
    out = DifferentiableAugment()(x, params=params)
    box = cutout_box_ref(height, width, (ux, uy), ratio)
    for i in range(height):
        for j in range(width):
            if (i, j) in box:
                assert torch.all(out[0, :, i, j] == 0)
            else:
                assert torch.equal(out[0, :, i, j], x[0, :, i, j])


def test_cutout_inside_the_image_removes_side_squared_pixels() -> None:
    x = torch.rand(1, 3, 32, 32) + 0.5
    params = identity_params(1)._replace(cutout_center=torch.tensor([[0.5, 0.5]]), cutout_size=torch.tensor([0.5]))
    out = DifferentiableAugment()(x, params=params)
    zeros = out[0, 0] == 0
    assert int(zeros.sum()) == 16 * 16
    rows, cols = zeros.any(1).nonzero().flatten(), zeros.any(0).nonzero().flatten()
    assert rows.tolist() == list(range(8, 24)) and cols.tolist() == list(range(8, 24))


def test_full_pipeline_applies_flip_colour_geometric_cutout_in_order() -> None:
    aug = DifferentiableAugment(geometric=("rotate",))
    x = torch.rand(5, 3, 8, 8, dtype=torch.float64)
    params = aug.sample_params(5, generator=torch.Generator().manual_seed(3))
    params = params._replace(flip=torch.tensor([True, False, True, True, False]))
    expected = x
    for stage in ("flip", "color", "geometric", "cutout"):
        expected = aug(expected, params=only_stage(params, stage))
    torch.testing.assert_close(aug(x, params=params), expected)
    assert not torch.allclose(expected, x)


# ---------------------------------------------------------------------------------------------------------------
# sampling


def test_shared_seed_gives_identical_params_for_any_batch_size() -> None:
    aug = DifferentiableAugment()
    p4, p40 = aug.sample_params(4, seed=11), aug.sample_params(40, seed=11)
    for small, large in zip(p4, p40, strict=True):
        assert small.shape[0] == 4 and large.shape[0] == 40
        assert torch.equal(small, large[:1].expand_as(small))
        assert torch.equal(large, large[:1].expand_as(large))


def test_shared_seed_gives_identical_images_for_identical_inputs() -> None:
    aug = DifferentiableAugment()
    x40 = torch.rand(40, 3, 8, 8)
    for seed in range(6):  # covers several geometric ops
        out40 = aug(x40, seed=seed)
        out4 = aug(x40[:4].clone(), seed=seed)
        torch.testing.assert_close(out4, out40[:4])
        # ... and the one transform is the same for every sample: identical inputs give identical outputs.
        same = aug(x40[:1].expand(3, -1, -1, -1).contiguous(), seed=seed)
        torch.testing.assert_close(same, same[:1].expand_as(same))


def test_seeded_calls_leave_global_rng_untouched() -> None:
    aug = DifferentiableAugment()
    x = torch.rand(3, 3, 8, 8)
    state = torch.get_rng_state()
    aug(x, seed=5)
    aug.sample_params(7, seed=123, shared=False)
    aug(x, generator=torch.Generator().manual_seed(1))
    cutmix(x, torch.tensor([0, 1, 2]), 3, p=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    aug(x)  # unseeded calls do use the global RNG
    assert not torch.equal(torch.get_rng_state(), state)


def test_seed_reproducible_and_distinct() -> None:
    aug = DifferentiableAugment()
    a, b, c = aug.sample_params(8, seed=42), aug.sample_params(8, seed=42), aug.sample_params(8, seed=43)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(u, v) for u, v in zip(a, c, strict=True))


def test_unseeded_draws_are_per_sample_and_generator_reproducible() -> None:
    aug = DifferentiableAugment()
    p = aug.sample_params(16, generator=torch.Generator().manual_seed(0))
    q = aug.sample_params(16, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip(p, q, strict=True))
    assert p.brightness.unique().numel() == 16
    assert p.cutout_center.unique(dim=0).shape[0] == 16
    assert set(p.flip.tolist()) == {True, False}
    torch.manual_seed(0)
    g = aug.sample_params(16)
    assert g.contrast.unique().numel() == 16
    # `shared` overrides either default.
    assert aug.sample_params(6, seed=1, shared=False).brightness.unique().numel() == 6
    assert aug.sample_params(6, generator=torch.Generator().manual_seed(0), shared=True).angle.unique().numel() == 1


@SETTINGS
@given(
    crop_ratio=st.floats(0.0, 0.5),
    scale_ratio=st.floats(1.0, 2.0),
    rotate_degrees=st.floats(0.0, 180.0),
    brightness=st.floats(0.0, 2.0),
    saturation=st.floats(0.0, 3.0),
    contrast=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_sampled_params_stay_in_their_ranges(
    crop_ratio: float,
    scale_ratio: float,
    rotate_degrees: float,
    brightness: float,
    saturation: float,
    contrast: float,
    seed: int,
) -> None:
    aug = DifferentiableAugment(
        crop_ratio=crop_ratio,
        scale_ratio=scale_ratio,
        rotate_degrees=rotate_degrees,
        brightness=brightness,
        saturation=saturation,
        contrast=contrast,
    )
    p = aug.sample_params(64, seed=seed, shared=False)
    eps = 1e-5
    assert torch.all(p.brightness.abs() <= 0.5 * brightness + eps)
    assert torch.all((p.saturation >= -eps) & (p.saturation <= saturation + eps))
    assert torch.all((p.contrast >= contrast - eps) & (p.contrast <= contrast + 1 + eps))
    crop, scale, rotate = (p.geometric == k for k in range(3))
    assert torch.all((crop | scale | rotate) & (p.geometric >= 0))
    # Exactly one geometric op per sample: the others stay at identity.
    assert torch.all(p.translation[~crop] == 0) and torch.all(p.translation[crop].abs() <= crop_ratio + eps)
    assert torch.all(p.scale[~scale] == 1)
    assert torch.all((p.scale[scale] >= 1 / scale_ratio - eps) & (p.scale[scale] <= scale_ratio + eps))
    assert torch.all(p.angle[~rotate] == 0) and torch.all(p.angle[rotate].abs() <= rotate_degrees + eps)
    assert torch.all((p.cutout_center >= 0) & (p.cutout_center < 1)) and torch.all(p.cutout_size == 0.5)


def test_each_geometric_op_is_chosen_and_restricted_to_the_configured_ones() -> None:
    p = DifferentiableAugment().sample_params(200, seed=0, shared=False)
    assert set(p.geometric.tolist()) == {0, 1, 2}
    only = DifferentiableAugment(geometric=("scale", "rotate")).sample_params(200, seed=0, shared=False)
    assert set(only.geometric.tolist()) == {GEOMETRIC_OPS.index("scale"), GEOMETRIC_OPS.index("rotate")}


def test_disabled_ops_are_identity_and_do_not_shift_other_draws() -> None:
    full = DifferentiableAugment().sample_params(32, seed=9, shared=False)
    bare = DifferentiableAugment(flip=False, color=False, geometric=(), cutout=False)
    p = bare.sample_params(32, seed=9, shared=False)
    assert not p.flip.any() and torch.all(p.brightness == 0) and torch.all(p.saturation == 1)
    assert torch.all(p.contrast == 1) and torch.all(p.geometric == -1) and torch.all(p.cutout_size == 0)
    assert torch.equal(p.cutout_center, full.cutout_center)  # fixed draw order
    no_flip = DifferentiableAugment(flip=False).sample_params(32, seed=9, shared=False)
    assert torch.equal(no_flip.brightness, full.brightness) and torch.equal(no_flip.angle, full.angle)
    x = torch.rand(32, 3, 5, 5)
    assert torch.equal(bare(x, seed=9), x)


@pytest.mark.parametrize("channels", [1, 2, 5])
def test_any_size_and_channel_count(channels: int) -> None:
    aug = DifferentiableAugment()
    x = torch.rand(3, channels, 7, 11, dtype=torch.float64)
    out = aug(x, seed=0)
    assert out.shape == x.shape and out.dtype == torch.float64


def test_gradcheck_float64() -> None:
    aug = DifferentiableAugment()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    params = AugmentParams(
        flip=torch.tensor([True]),
        brightness=torch.tensor([0.2]),
        saturation=torch.tensor([1.5]),
        contrast=torch.tensor([0.8]),
        geometric=torch.tensor([2]),
        translation=torch.zeros(1, 2),
        scale=torch.tensor([[1.1, 0.9]]),
        angle=torch.tensor([10.0]),
        cutout_center=torch.tensor([[0.3, 0.6]]),
        cutout_size=torch.tensor([0.5]),
    )
    assert torch.autograd.gradcheck(lambda t: aug(t, params=params), (x,))
    assert torch.autograd.gradcheck(lambda t: aug(t, seed=4), (x,))
    out = aug(x, params=params)
    assert torch.all(out[0, :, 2:6, 0:4] == 0)  # the cutout box (centre pixel (4, 2), side 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_see_the_same_transform() -> None:
    aug = DifferentiableAugment()
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    for seed in range(4):
        torch.testing.assert_close(aug(x.cuda(), seed=seed).cpu(), aug(x, seed=seed))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"geometric": ("crop", "shear")}, ValueError, "geometric"),
        ({"geometric": "crop"}, TypeError, "geometric"),
        ({"geometric": ("crop", "crop")}, ValueError, "geometric"),
        ({"geometric": 3}, TypeError, "geometric"),
        ({"flip": 1}, TypeError, "flip"),
        ({"color": None}, TypeError, "color"),
        ({"cutout": "yes"}, TypeError, "cutout"),
        ({"crop_ratio": -0.1}, ValueError, "crop_ratio"),
        ({"crop_ratio": 1.5}, ValueError, "crop_ratio"),
        ({"scale_ratio": 0.9}, ValueError, "scale_ratio"),
        ({"scale_ratio": "2"}, TypeError, "scale_ratio"),
        ({"rotate_degrees": 200.0}, ValueError, "rotate_degrees"),
        ({"cutout_ratio": 1.1}, ValueError, "cutout_ratio"),
        ({"brightness": -1.0}, ValueError, "brightness"),
        ({"saturation": float("nan")}, ValueError, "saturation"),
        ({"contrast": float("inf")}, ValueError, "contrast"),
    ],
)
def test_bad_config_raises(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        DifferentiableAugment(**kwargs)


def _bad_shape_params() -> AugmentParams:
    return identity_params(2)._replace(translation=torch.zeros(2))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda a: a(torch.rand(3, 8, 8)), ValueError, "`x`"),
        (lambda a: a(torch.rand(2, 1, 3, 8, 8)), ValueError, "`x`"),
        (lambda a: a(torch.ones(2, 3, 8, 8, dtype=torch.uint8)), TypeError, "`x`"),
        (lambda a: a([[1.0]]), TypeError, "`x`"),
        (lambda a: a(torch.rand(0, 3, 8, 8)), ValueError, "`x`"),
        (lambda a: a(torch.rand(2, 3, 4, 4), seed=1, generator=torch.Generator()), ValueError, "seed"),
        (lambda a: a(torch.rand(2, 3, 4, 4), seed=1, params=identity_params(2)), ValueError, "params"),
        (lambda a: a(torch.rand(2, 3, 4, 4), params={"flip": None}), TypeError, "params"),
        (lambda a: a(torch.rand(4, 3, 4, 4), params=identity_params(3)), ValueError, "params"),
        (lambda a: a(torch.rand(2, 3, 4, 4), params=_bad_shape_params()), ValueError, "params.translation"),
        (lambda a: a(torch.rand(2, 3, 4, 4), generator=5), TypeError, "generator"),
        (lambda a: a.sample_params(0), ValueError, "batch_size"),
        (lambda a: a.sample_params(2.0), TypeError, "batch_size"),
        (lambda a: a.sample_params(2, seed=-1), ValueError, "seed"),
        (lambda a: a.sample_params(2, seed=1.5), TypeError, "seed"),
        (lambda a: a.sample_params(2, shared=1), TypeError, "shared"),
    ],
)
def test_bad_forward_input_raises(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(DifferentiableAugment())


def test_params_of_batch_one_broadcast() -> None:
    aug = DifferentiableAugment()
    x = torch.rand(5, 3, 8, 8)
    p1 = aug.sample_params(1, seed=3)
    torch.testing.assert_close(aug(x, params=p1), aug(x, seed=3))


# ---------------------------------------------------------------------------------------------------------------
# cutmix


def _indexed_batch(batch: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """Channel 0 holds the sample index (to recover the partner); channels 1-2 are random."""
    x = torch.rand(batch, 3, height, width, generator=gen, dtype=torch.float64)
    x[:, 0] = torch.arange(batch, dtype=torch.float64).view(-1, 1, 1)
    return x


@SETTINGS
@given(
    batch=st.integers(2, 6),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    beta=st.sampled_from([0.3, 1.0, 2.5]),
    seed=st.integers(0, 2**16),
)
def test_cutmix_label_weight_equals_pasted_pixel_fraction(
    batch: int, height: int, width: int, beta: float, seed: int
) -> None:
    x = _indexed_batch(batch, height, width, torch.Generator().manual_seed(seed + 1))
    labels = torch.arange(batch)
    mixed, soft = cutmix(x, labels, batch + 1, p=1.0, beta=beta, generator=torch.Generator().manual_seed(seed))
    assert soft.shape == (batch, batch + 1) and soft.dtype == x.dtype
    torch.testing.assert_close(soft.sum(1), torch.ones(batch, dtype=x.dtype))
    assert torch.all(soft[:, batch] == 0)
    boxes = set()
    for i in range(batch):
        pasted = mixed[i, 0] != i
        partners = mixed[i, 0][pasted].unique()
        assert partners.numel() <= 1
        if partners.numel() == 0:  # paired with itself, or an empty box: unchanged image, one-hot target
            assert torch.equal(mixed[i], x[i])
            continue
        j = int(partners.item())
        # pasted pixels come from the partner, the rest from the image itself
        mask = pasted.expand_as(mixed[i])
        assert torch.equal(mixed[i][mask], x[j][mask]) and torch.equal(mixed[i][~mask], x[i][~mask])
        fraction = int(pasted.sum()) / (height * width)
        assert soft[i, j].item() == pytest.approx(fraction, abs=1e-12)
        assert soft[i, i].item() == pytest.approx(1 - fraction, abs=1e-12)
        rows, cols = pasted.any(1), pasted.any(0)
        assert torch.equal(pasted, rows.view(-1, 1) & cols.view(1, -1))  # a rectangle
        boxes.add((tuple(rows.tolist()), tuple(cols.tolist())))
    assert len(boxes) <= 1  # one box for the batch


def test_cutmix_soft_targets_mix_by_area() -> None:
    gen = torch.Generator().manual_seed(0)
    x = _indexed_batch(6, 8, 8, gen)
    target = torch.softmax(torch.randn(6, 4, generator=gen), dim=1)
    for seed in range(10):
        mixed, soft = cutmix(x, target, 4, p=1.0, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(soft.sum(1), torch.ones(6))
        for i in range(6):
            pasted = mixed[i, 0] != i
            if pasted.any():
                j = int(mixed[i, 0][pasted][0].item())
                kept = 1 - int(pasted.sum()) / 64
                torch.testing.assert_close(soft[i], kept * target[i] + (1 - kept) * target[j])


def test_cutmix_p_zero_is_identity_with_one_hot_targets() -> None:
    x = torch.rand(5, 3, 6, 6)
    labels = torch.tensor([0, 3, 1, 3, 2])
    for seed in range(5):
        mixed, soft = cutmix(x, labels, 4, p=0.0, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(mixed, x)
        assert torch.equal(soft, torch.nn.functional.one_hot(labels, 4).float())
    target = torch.softmax(torch.randn(5, 4), dim=1)
    assert torch.equal(cutmix(x, target, 4, p=0.0)[1], target)


def test_cutmix_probability_and_reproducibility() -> None:
    x = _indexed_batch(8, 8, 8, torch.Generator().manual_seed(0))
    labels = torch.arange(8)
    applied = 0
    for seed in range(200):
        _, soft = cutmix(x, labels, 8, p=0.5, generator=torch.Generator().manual_seed(seed))
        applied += int(not torch.equal(soft, torch.eye(8, dtype=soft.dtype)))
    assert 60 <= applied <= 140
    a = cutmix(x, labels, 8, p=1.0, generator=torch.Generator().manual_seed(5))
    b = CutMix(8, p=1.0)(x, labels, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_cutmix_lambda_follows_beta(beta: float) -> None:
    from hmdc_modules.condensation.augment import _sample_beta

    gen = torch.Generator().manual_seed(0)
    draws = torch.tensor([_sample_beta(beta, gen) for _ in range(3000)], dtype=torch.float64)
    assert torch.all((draws >= 0) & (draws <= 1))
    variance = 1 / (4 * (2 * beta + 1))
    assert abs(draws.mean().item() - 0.5) < 5 * math.sqrt(variance / 3000)
    assert abs(draws.var().item() - variance) < 0.15 * variance


def test_cutmix_is_differentiable() -> None:
    x = torch.rand(3, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2])

    def mixed(t: torch.Tensor) -> torch.Tensor:
        return cutmix(t, labels, 3, p=1.0, generator=torch.Generator().manual_seed(1))[0]

    assert torch.autograd.gradcheck(mixed, (x,))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda x: cutmix(x, torch.zeros(4, 3, 1, dtype=torch.long), 3), ValueError, "target"),
        (lambda x: cutmix(x, torch.zeros(5, dtype=torch.long), 3), ValueError, "batch size"),
        (lambda x: cutmix(x, torch.zeros(4, 5), 3), ValueError, "num_classes"),
        (lambda x: cutmix(x, torch.zeros(4, 3, dtype=torch.long), 3), TypeError, "target"),
        (lambda x: cutmix(x, torch.zeros(4), 3), TypeError, "target"),
        (lambda x: cutmix(x, torch.zeros(4, dtype=torch.bool), 3), TypeError, "target"),
        (lambda x: cutmix(x, torch.tensor([0, 1, 2, 3]), 3), ValueError, "target"),
        (lambda x: cutmix(x, torch.tensor([0, -1, 2, 1]), 3), ValueError, "target"),
        (lambda x: cutmix(x, [0, 1, 2, 0], 3), TypeError, "target"),
        (lambda x: cutmix(x, torch.zeros(4, dtype=torch.long), 0), ValueError, "num_classes"),
        (lambda x: cutmix(x, torch.zeros(4, dtype=torch.long), 3.0), TypeError, "num_classes"),
        (lambda x: cutmix(x, torch.zeros(4, dtype=torch.long), 3, p=1.5), ValueError, "`p`"),
        (lambda x: cutmix(x, torch.zeros(4, dtype=torch.long), 3, beta=0.0), ValueError, "beta"),
        (lambda x: cutmix(x, torch.zeros(4, dtype=torch.long), 3, generator=1), TypeError, "generator"),
        (lambda x: cutmix(x[0], torch.zeros(3, dtype=torch.long), 3), ValueError, "`x`"),
        (lambda x: cutmix(x.long(), torch.zeros(4, dtype=torch.long), 3), TypeError, "`x`"),
        (lambda x: CutMix(0), ValueError, "num_classes"),
        (lambda x: CutMix(3, p=-0.1), ValueError, "`p`"),
        (lambda x: CutMix(3, beta=-1.0), ValueError, "beta"),
    ],
)
def test_cutmix_bad_input_raises(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(torch.rand(4, 3, 6, 6))

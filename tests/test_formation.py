"""Tests for multi-formation encode/decode (hmdc_modules.condensation.formation)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hmdc_modules.condensation.formation import decode_formation, decode_formation_labels, encode_formation

SETTINGS = settings(deadline=None, max_examples=20)


def bilinear_align_corners_ref(img: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Per-pixel bilinear resize with align_corners=True: output pixel i samples input row i * (h - 1) / (H - 1)."""
    channels, height, width = img.shape
    out = torch.zeros(channels, out_h, out_w, dtype=img.dtype)
    for i in range(out_h):
        y = i * (height - 1) / (out_h - 1) if out_h > 1 else 0.0
        y0 = min(math.floor(y), height - 1)
        y1 = min(y0 + 1, height - 1)
        wy = y - y0
        for j in range(out_w):
            x = j * (width - 1) / (out_w - 1) if out_w > 1 else 0.0
            x0 = min(math.floor(x), width - 1)
            x1 = min(x0 + 1, width - 1)
            wx = x - x0
            for c in range(channels):
                top = (1 - wx) * img[c, y0, x0] + wx * img[c, y0, x1]
                bottom = (1 - wx) * img[c, y1, x0] + wx * img[c, y1, x1]
                out[c, i, j] = (1 - wy) * top + wy * bottom
    return out


def encode_ref(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Explicit loop over stored images and tiles."""
    total, channels, height, width = images.shape
    count = total // factor**2
    h, w = height // factor, width // factor
    out = torch.zeros(count, channels, height, width, dtype=images.dtype)
    for j in range(count):
        for r in range(factor):
            for c in range(factor):
                source = images[(r * factor + c) * count + j]
                out[j, :, r * h : (r + 1) * h, c * w : (c + 1) * w] = bilinear_align_corners_ref(source, h, w)
    return out


def decode_ref(images: torch.Tensor, factor: int, size: tuple[int, int]) -> torch.Tensor:
    """Explicit loop: tile (r, c) of stored image j goes to output (r * f + c) * N + j."""
    count, channels, height, width = images.shape
    h, w = height // factor, width // factor
    out = torch.zeros(factor * factor * count, channels, *size, dtype=images.dtype)
    for j in range(count):
        for r in range(factor):
            for c in range(factor):
                tile = images[j, :, r * h : (r + 1) * h, c * w : (c + 1) * w]
                out[(r * factor + c) * count + j] = bilinear_align_corners_ref(tile, *size)
    return out


def assert_constant(t: torch.Tensor, value: float) -> None:
    """All entries equal ``value`` up to float32 interpolation rounding."""
    torch.testing.assert_close(t, torch.full_like(t, float(value)), atol=1e-5, rtol=0.0)


def test_bilinear_reference_agrees_with_torch() -> None:
    # Guards the reference itself: the library must resize with bilinear + align_corners=True.
    img = torch.rand(2, 5, 7, dtype=torch.float64)
    expected = torch.nn.functional.interpolate(img[None], size=(9, 3), mode="bilinear", align_corners=True)[0]
    torch.testing.assert_close(bilinear_align_corners_ref(img, 9, 3), expected)


@SETTINGS
@given(
    factor=st.integers(1, 3),
    count=st.integers(1, 2),
    channels=st.integers(1, 3),
    tile_h=st.integers(1, 3),
    tile_w=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_encode_matches_tile_loop(factor: int, count: int, channels: int, tile_h: int, tile_w: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(factor * factor * count, channels, factor * tile_h, factor * tile_w, generator=gen)
    x = x.double()
    out = encode_formation(x, factor)
    assert out.shape == (count, channels, factor * tile_h, factor * tile_w)
    torch.testing.assert_close(out, encode_ref(x, factor))


@SETTINGS
@given(
    factor=st.integers(1, 3),
    count=st.integers(1, 2),
    channels=st.integers(1, 2),
    tile=st.integers(1, 3),
    size=st.one_of(st.none(), st.tuples(st.integers(1, 6), st.integers(1, 6))),
    seed=st.integers(0, 2**16),
)
def test_decode_matches_tile_loop(
    factor: int, count: int, channels: int, tile: int, size: tuple[int, int] | None, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    s = torch.rand(count, channels, factor * tile, factor * (tile + 1), generator=gen).double()
    out = decode_formation(s, factor, size)
    expected_size = size if size is not None else (factor * tile, factor * (tile + 1))
    assert out.shape == (factor * factor * count, channels, *expected_size)
    if factor == 1 and size is None:
        assert out is s
    torch.testing.assert_close(out, decode_ref(s, factor, expected_size))


def test_encode_layout_factor_two_is_row_major() -> None:
    # Image k is the constant k: after encoding, stored image j must read TL=j, TR=j+N, BL=j+2N, BR=j+3N.
    count = 3
    x = torch.arange(4 * count, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 2, 8, 8).contiguous()
    s = encode_formation(x, 2)
    for j in range(count):
        assert_constant(s[j, :, :4, :4], j)
        assert_constant(s[j, :, :4, 4:], j + count)
        assert_constant(s[j, :, 4:, :4], j + 2 * count)
        assert_constant(s[j, :, 4:, 4:], j + 3 * count)


def test_decode_layout_factor_two_is_row_major() -> None:
    count = 2
    s = torch.zeros(count, 1, 4, 4)
    for j in range(count):
        s[j, :, :2, :2] = 10 * j + 0  # top-left
        s[j, :, :2, 2:] = 10 * j + 1  # top-right
        s[j, :, 2:, :2] = 10 * j + 2  # bottom-left
        s[j, :, 2:, 2:] = 10 * j + 3  # bottom-right
    out = decode_formation(s, 2)
    for tile in range(4):
        for j in range(count):
            assert_constant(out[tile * count + j], 10 * j + tile)


@SETTINGS
@given(factor=st.integers(2, 3), count=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_decode_of_encode_equals_down_up_in_input_order(factor: int, count: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(factor * factor * count, 2, 4 * factor, 4 * factor, generator=gen, dtype=torch.float64)
    roundtrip = decode_formation(encode_formation(x, factor), factor)
    down = torch.nn.functional.interpolate(x, size=(4, 4), mode="bilinear", align_corners=True)
    expected = torch.nn.functional.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=True)
    torch.testing.assert_close(roundtrip, expected)


@SETTINGS
@given(factor=st.integers(2, 3), count=st.integers(1, 3), tile=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_encode_inverts_decode_on_tilewise_affine_images(factor: int, count: int, tile: int, seed: int) -> None:
    # Bilinear resizing with align_corners=True preserves affine functions exactly, so on images that are affine
    # inside each tile encode(decode(s)) must give back s: this pins decode's order as encode's inverse.
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(tile, dtype=torch.float64).view(tile, 1)
    cols = torch.arange(tile, dtype=torch.float64).view(1, tile)
    s = torch.zeros(count, 2, factor * tile, factor * tile, dtype=torch.float64)
    for j in range(count):
        for r in range(factor):
            for c in range(factor):
                for ch in range(2):
                    a, b, d = torch.rand(3, generator=gen, dtype=torch.float64)
                    s[j, ch, r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = a + b * rows + d * cols
    torch.testing.assert_close(encode_formation(decode_formation(s, factor), factor), s)


def test_factor_one_is_identity() -> None:
    x = torch.rand(3, 2, 5, 7)
    assert encode_formation(x, 1) is x
    assert decode_formation(x, 1) is x
    assert decode_formation(x, 1, (5, 7)) is x
    labels = torch.tensor([1, 2, 0])
    assert decode_formation_labels(labels, 1) is labels
    resized = decode_formation(x, 1, (9, 4))
    expected = torch.nn.functional.interpolate(x, size=(9, 4), mode="bilinear", align_corners=True)
    torch.testing.assert_close(resized, expected)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("factor", [2, 3])
def test_labels_align_with_decoded_images(soft: bool, factor: int) -> None:
    # Stored image j is the constant j, so decoded image k is constant and names its stored image.
    count = 4
    s = torch.arange(count, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2 * factor, 2 * factor)
    labels = torch.tensor([7, 2, 9, 2])
    if soft:
        labels = torch.nn.functional.one_hot(labels, 10).float() * 0.9 + 0.01
    decoded = decode_formation(s, factor)
    out_labels = decode_formation_labels(labels, factor)
    assert out_labels.shape == (factor * factor * count, *labels.shape[1:])
    assert out_labels.dtype == labels.dtype
    for k in range(decoded.shape[0]):
        source = round(decoded[k, 0, 0, 0].item())
        assert_constant(decoded[k], source)
        assert torch.equal(out_labels[k], labels[source])


def test_dtype_and_gradients() -> None:
    s = torch.rand(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: decode_formation(t, 2, (3, 5)), (s,))
    x = torch.rand(4, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: encode_formation(t, 2), (x,))
    assert decode_formation(s.float(), 2).dtype == torch.float32
    assert encode_formation(x.detach(), 2).dtype == torch.float64


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: encode_formation([1.0], 2), TypeError, "images"),
        (lambda: encode_formation(torch.ones(4, 1, 4, 4, dtype=torch.long), 2), TypeError, "images"),
        (lambda: encode_formation(torch.rand(4, 4, 4), 2), ValueError, "images"),
        (lambda: encode_formation(torch.rand(0, 1, 4, 4), 2), ValueError, "images"),
        (lambda: encode_formation(torch.rand(6, 1, 4, 4), 2), ValueError, "multiple"),
        (lambda: encode_formation(torch.rand(4, 1, 5, 4), 2), ValueError, "divisible"),
        (lambda: encode_formation(torch.rand(4, 1, 4, 4), 0), ValueError, "factor"),
        (lambda: encode_formation(torch.rand(4, 1, 4, 4), 2.0), TypeError, "factor"),
        (lambda: encode_formation(torch.rand(4, 1, 4, 4), True), TypeError, "factor"),
        (lambda: decode_formation("x", 2), TypeError, "images"),
        (lambda: decode_formation(torch.rand(1, 4, 4), 2), ValueError, "images"),
        (lambda: decode_formation(torch.ones(1, 1, 4, 4, dtype=torch.int32), 2), TypeError, "images"),
        (lambda: decode_formation(torch.rand(1, 1, 4, 3), 2), ValueError, "divisible"),
        (lambda: decode_formation(torch.rand(1, 1, 4, 4), -1), ValueError, "factor"),
        (lambda: decode_formation(torch.rand(1, 1, 4, 4), 2, (0, 4)), ValueError, "size"),
        (lambda: decode_formation(torch.rand(1, 1, 4, 4), 2, (4,)), TypeError, "size"),
        (lambda: decode_formation(torch.rand(1, 1, 4, 4), 2, (4.0, 4)), TypeError, "size"),
        (lambda: decode_formation(torch.rand(1, 1, 4, 4), 2, 4), TypeError, "size"),
        (lambda: decode_formation_labels([1, 2], 2), TypeError, "labels"),
        (lambda: decode_formation_labels(torch.zeros(2, 2, 2), 2), ValueError, "labels"),
        (lambda: decode_formation_labels(torch.zeros(2), 0), ValueError, "factor"),
    ],
)
def test_bad_input_raises(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()

"""Paired differences and the Student-t quantile behind their intervals."""

from __future__ import annotations

import math
import re
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmdc_modules.evaluation.paired import paired_difference, student_t_quantile

probabilities = st.floats(min_value=0.01, max_value=0.99)
values = st.floats(min_value=-100, max_value=100, allow_nan=False)


@settings(max_examples=25, deadline=None)
@given(probabilities)
def test_quantile_matches_the_closed_forms_of_one_and_two_degrees_of_freedom(p: float) -> None:
    assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-7, abs=1e-9)  # Cauchy
    assert student_t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-7, abs=1e-9)


def test_quantile_approaches_the_normal_one() -> None:
    z = statistics.NormalDist().inv_cdf(0.975)  # first Cornish-Fisher term: t = z + (z^3 + z) / (4 df) + O(df^-2)
    assert student_t_quantile(0.975, 400) == pytest.approx(z + (z**3 + z) / 1600, abs=1e-4)
    assert student_t_quantile(0.975, 5) > student_t_quantile(0.975, 10) > student_t_quantile(0.975, 400)


@settings(max_examples=25, deadline=None)
@given(probabilities, st.integers(min_value=1, max_value=40))
def test_quantile_is_odd(p: float, df: int) -> None:
    assert student_t_quantile(1 - p, df) == pytest.approx(-student_t_quantile(p, df), rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(values, values), min_size=2, max_size=8))
def test_interval_against_the_textbook_formula(pairs: list[tuple[float, float]]) -> None:
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    result = paired_difference(a, b)
    diffs = [x - y for x, y in pairs]
    half = student_t_quantile(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    assert result.mean == pytest.approx(statistics.fmean(diffs), abs=1e-9)
    assert result.low == pytest.approx(result.mean - half, abs=1e-7)
    assert result.high == pytest.approx(result.mean + half, abs=1e-7)
    assert result.n == len(pairs) and result.differences == pytest.approx(diffs)
    shifted = paired_difference([x + 7.0 for x in a], [y + 7.0 for y in b])  # a common shift cancels in pairs
    assert shifted.mean == pytest.approx(result.mean, abs=1e-7)


def test_a_wider_confidence_gives_a_wider_interval_and_the_format_is_signed() -> None:
    a, b = [50.0, 51.0, 49.5], [49.0, 50.5, 49.0]
    narrow, wide = paired_difference(a, b, confidence=0.8), paired_difference(a, b, confidence=0.99)
    assert wide.low < narrow.low < narrow.mean < narrow.high < wide.high
    assert paired_difference(a, b).format() == "+0.67 [-0.05, +1.38]"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: paired_difference([1.0, 2.0], [1.0]), ValueError, "must pair up: got 2 and 1"),
        (lambda: paired_difference([1.0], [2.0]), ValueError, "at least 2 pairs, got 1"),
        (lambda: paired_difference([1.0, math.nan], [1.0, 2.0]), ValueError, "`a[1]` must be finite, got nan"),
        (lambda: paired_difference([1.0, "2"], [1.0, 2.0]), TypeError, "`a[1]` must be a number, got str"),
        (lambda: paired_difference([1.0, 2.0], [1.0, 2.0], confidence=1.0), ValueError, "`confidence` must lie"),
        (lambda: student_t_quantile(0.975, 0), ValueError, "`df` must be >= 1, got 0"),
        (lambda: student_t_quantile(0.975, 2.0), TypeError, "`df` must be an int, got float"),
        (lambda: student_t_quantile(1.0, 2), ValueError, "`p` must lie in (0, 1), got 1.0"),
    ],
)
def test_bad_input_is_named(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call()

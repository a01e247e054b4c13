"""Paired differences between two arms of a protocol, with a Student-t confidence interval.

Two arms condensed with the same seeds form pairs: seed ``k`` of arm A and seed ``k`` of arm B share their real
batches' draws and initial images, so ``a[k] - b[k]`` removes what the seed alone does. With ``n`` pairs, mean
difference $\\bar d$ and sample standard deviation $s$ (``ddof = 1``), the interval is

$$\\bar d \\pm t_{1 - \\alpha/2,\\, n - 1} \\, s / \\sqrt{n}.$$

With three seeds $t_{0.975, 2} \\approx 4.30$: the interval is wide, and says so.

>>> d = paired_difference([50.0, 51.0, 49.5], [49.0, 50.5, 49.0])
>>> round(d.mean, 3), d.n
(0.667, 3)
>>> round(d.low, 2), round(d.high, 2)
(-0.05, 1.38)
>>> round(student_t_quantile(0.975, 2), 4)
4.3027
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairedDifference", "paired_difference", "student_t_quantile"]


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}")
    return float(value)


def _t_cdf_upper_half(x: float, df: int) -> float:
    """P(0 <= T <= x) for x >= 0, by composite Simpson integration of the density (smooth, so 2,000 panels give
    about 1e-10 for df >= 1 over the x this module asks for)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(t: float) -> float:
        return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))

    panels = 2000
    h = x / panels
    total = density(0.0) + density(x)
    total += sum((4 if i % 2 else 2) * density(i * h) for i in range(1, panels))
    return total * h / 3


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom (bisection on the CDF).

    Args:
        p: Probability in (0, 1).
        df: Degrees of freedom, a positive integer.

    Raises:
        TypeError: If ``p`` is not a number or ``df`` not an int.
        ValueError: If ``p`` is outside (0, 1) or ``df < 1``.
    """
    p = _check_real("p", p)
    if not 0 < p < 1:
        raise ValueError(f"`p` must lie in (0, 1), got {p}")
    if isinstance(df, bool) or not isinstance(df, int):
        raise TypeError(f"`df` must be an int, got {type(df).__name__}")
    if df < 1:
        raise ValueError(f"`df` must be >= 1, got {df}")
    if p < 0.5:
        return -student_t_quantile(1 - p, df)
    target = p - 0.5
    low, high = 0.0, 1.0
    while _t_cdf_upper_half(high, df) < target:  # the tails are heavy at df = 1: widen until bracketed
        low, high = high, 2 * high
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf_upper_half(mid, df) < target else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a[k] - b[k]`` over ``n`` pairs and its two-sided confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    differences: tuple[float, ...]

    def format(self, digits: int = 2) -> str:
        """``+0.67 [-0.05, +1.38]``: the mean and the interval, signed."""
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_difference(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> PairedDifference:
    """Mean paired difference ``a - b`` with a Student-t interval at ``confidence``.

    Args:
        a: One arm's values, one per pairing unit (e.g. condensation seed).
        b: The other arm's values, in the same order.
        confidence: Two-sided coverage in (0, 1).

    Raises:
        ValueError: If the lengths differ, there are fewer than 2 pairs, or a value is not finite.
        TypeError: If a value is not a number.
    """
    if len(a) != len(b):
        raise ValueError(f"`a` and `b` must pair up: got {len(a)} and {len(b)} values")
    if len(a) < 2:
        raise ValueError(f"an interval needs at least 2 pairs, got {len(a)}")
    confidence = _check_real("confidence", confidence)
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must lie in (0, 1), got {confidence}")
    diffs = tuple(
        _check_real(f"a[{i}]", x) - _check_real(f"b[{i}]", y) for i, (x, y) in enumerate(zip(a, b, strict=True))
    )
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = student_t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n, confidence, diffs)

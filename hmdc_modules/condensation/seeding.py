"""One seed mixer: a reproducible seed for every (iteration, step, class, purpose) of a run.

A condensation or evaluation run draws many random streams (augmentation, batch order, initialisation). Deriving
each stream's seed from the run seed and a few integer counters makes every draw a pure function of those counters,
so a resumed run, or a run split over ranks, draws exactly what an uninterrupted single-process run draws.
"""

from __future__ import annotations

from typing import Any

from hmdc_modules._validation import describe

__all__ = ["SEED_MODULUS", "derive_seed"]

SEED_MODULUS: int = 2**62
"""The default modulus of [`derive_seed`][hmdc_modules.condensation.seeding.derive_seed]: seeds lie in $[0, 2^{62})$,
which ``torch.Generator.manual_seed`` accepts."""

_MULTIPLIER = 1_000_003


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {describe(value)}")
    return value


def derive_seed(seed: int, *counters: int, modulus: int = SEED_MODULUS) -> int:
    r"""Mix a run seed with integer counters into one seed, deterministically.

    Starting from $v = \text{seed}$, each counter $c$ in turn updates $v \leftarrow (1000003\,v + c + 1) \bmod m$.
    With no counters the result is ``seed`` unchanged. The ``+ 1`` keeps a counter of 0 from being a no-op, so
    ``derive_seed(s, 0)`` differs from ``s``. Python's ``%`` makes every result non-negative.

    To reproduce a formula of the form $(1000003\,s + k) \bmod m$ (one stream number $k \ge 1$), call
    ``derive_seed(s, k - 1, modulus=m)``.

    Args:
        seed: The run seed.
        *counters: Integers naming the stream (e.g. outer iteration, step, class, a purpose tag such as ``0xA06``).
        modulus: The modulus $m \ge 2$ (default $2^{62}$, see
            [`SEED_MODULUS`][hmdc_modules.condensation.seeding.SEED_MODULUS]).

    Returns:
        The derived seed, an ``int`` in $[0, m)$ when at least one counter is given.

    Raises:
        TypeError: If ``seed``, a counter or ``modulus`` is not an int (bools are refused).
        ValueError: If ``modulus`` is below 2.

    Examples:
        >>> derive_seed(0)
        0
        >>> derive_seed(0, 3)
        4
        >>> derive_seed(7, 1, 2) == ((7 * 1_000_003 + 2) * 1_000_003 + 3) % 2**62
        True
        >>> derive_seed(5, 1, modulus=2**63 - 1) == (5 * 1_000_003 + 2) % (2**63 - 1)
        True
    """
    _check_int("seed", seed)
    for index, counter in enumerate(counters):
        _check_int(f"counters[{index}]", counter)
    _check_int("modulus", modulus)
    if modulus < 2:
        raise ValueError(f"`modulus` must be >= 2, got {modulus}")
    value = seed
    for counter in counters:
        value = (value * _MULTIPLIER + counter + 1) % modulus
    return value

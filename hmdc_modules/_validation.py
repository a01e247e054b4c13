"""Argument checks shared by the public modules.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong value or shape)
with a message naming the argument, what was expected and what was received.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor


def describe(x: Any) -> str:
    """A short description of ``x`` for error messages (shape and dtype for tensors and arrays)."""
    if isinstance(x, Tensor):
        return f"Tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if type(x).__module__ == "numpy" and hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"numpy.{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype} (convert with torch.as_tensor)"
    return f"{type(x).__name__} {x!r}" if isinstance(x, int | float | str | bool) else type(x).__name__


def check_tensor(
    name: str,
    x: Any,
    *,
    ndim: int | Iterable[int] | None = None,
    floating: bool = False,
    nonempty: bool = False,
) -> Tensor:
    """Check that ``x`` is a tensor, optionally of a given rank, floating dtype and non-empty batch."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {describe(x)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            dims = " or ".join(str(d) for d in allowed)
            raise ValueError(f"`{name}` must have {dims} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"`{name}` must have a floating-point dtype, got {x.dtype}")
    if nonempty and (x.ndim == 0 or x.shape[0] == 0):
        raise ValueError(f"`{name}` must hold at least one sample, got shape {tuple(x.shape)}")
    return x


def check_scalar_loss(name: str, x: Any) -> Tensor:
    """Check that ``x`` is a scalar floating tensor (a loss)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a scalar torch.Tensor, got {describe(x)}")
    if x.numel() != 1 or x.ndim > 1:
        raise ValueError(f"`{name}` must be a scalar (0-dim) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must have a floating-point dtype, got {x.dtype}")
    return x.reshape(())


def check_finite(name: str, x: Tensor) -> Tensor:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity."""
    if not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "inf"
        raise ValueError(f"`{name}` is not finite (holds {bad}); refusing to use it")
    return x


def check_all_finite(named: Sequence[tuple[str, Tensor]]) -> None:
    """Raise ``ValueError`` naming the first of ``named`` that holds NaN or infinity (one device sync in all)."""
    if not named:
        return
    device = named[0][1].device
    flags = torch.stack([torch.isfinite(t.detach()).all().to(device) for _, t in named])
    if bool(flags.all()):
        return
    for name, t in named:
        check_finite(name, t.detach())


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Check that ``value`` is an ``int`` (not bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {describe(value)}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return value


def check_non_negative_float(name: str, value: Any) -> float:
    """Check that ``value`` is a finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"`{name}` must be a float, got {describe(value)}")
    if not (value >= 0.0 and value != float("inf")):
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value}")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of the strings in ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {options}, got {value!r}")
    return value


def check_same_batch(names: tuple[str, str], a: Tensor, b: Tensor) -> None:
    """Check that two tensors have the same leading (batch) size."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same batch size, got {a.shape[0]} "
            f"(shape {tuple(a.shape)}) and {b.shape[0]} (shape {tuple(b.shape)})"
        )


def check_module_sequence(name: str, modules: Any) -> None:
    """Check that ``modules`` is a non-empty list or tuple of ``nn.Module`` (a single module is refused)."""
    from torch import nn

    if isinstance(modules, nn.Module) or not isinstance(modules, Sequence):
        raise TypeError(f"`{name}` must be a list or tuple of nn.Module, got {describe(modules)}")
    if len(modules) == 0:
        raise ValueError(f"`{name}` must hold at least one model, got an empty sequence")
    for index, module in enumerate(modules):
        if not isinstance(module, nn.Module):
            raise TypeError(f"`{name}[{index}]` must be an nn.Module, got {describe(module)}")

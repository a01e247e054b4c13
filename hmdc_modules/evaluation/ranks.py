"""How the ranks of a ``torchrun`` evaluation tell each other that one of them failed.

At each meeting every rank sends ``(failure, payload)``: ``failure`` is ``None`` or the ``(type name, message)`` of
the exception it caught since the last meeting. After the meeting every rank knows whether any rank failed, so all
of them stop together, each with one line: its own error where it failed, else the first failure, prefixed with
the rank it came from. For a single process the meeting is a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from hmdc_modules.distributed import DistributedContext, all_gather_objects

__all__: list[str] = []

T = TypeVar("T")

_KNOWN: dict[str, type[Exception]] = {
    "FileNotFoundError": FileNotFoundError,
    "TypeError": TypeError,
    "ValueError": ValueError,
}


@dataclass(frozen=True)
class Meeting(Generic[T]):
    """What every rank brought to one meeting, in rank order."""

    failures: Sequence[tuple[str, str] | None]
    payloads: Sequence[T]

    @property
    def failed(self) -> bool:
        """Whether any rank failed."""
        return any(f is not None for f in self.failures)

    def raise_failure(self, own: BaseException | None, ctx: DistributedContext) -> None:
        """Raise ``own`` if this rank failed, else the first other rank's failure (nothing if none failed).

        A remote ``FileNotFoundError``, ``TypeError`` or ``ValueError`` keeps its type and message; any other
        becomes a ``RuntimeError`` naming its type. The message starts with ``rank R of W:``.
        """
        if own is not None:
            raise own
        for rank, failure in enumerate(self.failures):
            if failure is not None:
                kind, message = failure
                if kind in _KNOWN:
                    raise _KNOWN[kind](f"rank {rank} of {ctx.world_size}: {message}")
                raise RuntimeError(f"rank {rank} of {ctx.world_size} failed with {kind}: {message}")


def meet(own: BaseException | None, payload: T, ctx: DistributedContext) -> Meeting[T]:
    """Every rank's failure and payload: a collective, so every rank calls it at the same point.

    Examples:
        >>> from hmdc_modules.distributed import init_distributed
        >>> meeting = meet(None, "records", init_distributed("cpu"))
        >>> meeting.failed, list(meeting.payloads)
        (False, ['records'])
    """
    failure = None if own is None else (type(own).__name__, str(own))
    gathered = all_gather_objects((failure, payload), ctx)
    return Meeting([f for f, _ in gathered], [p for _, p in gathered])

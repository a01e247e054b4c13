r"""Running under ``torchrun``: the process group, who owns what, and the few collectives HMDC needs.

Everything here is PyTorch's own distributed engine (``torch.distributed``); nothing is a home-made process pool.
A script calls [`init_distributed`][hmdc_modules.distributed.init_distributed] once: launched by ``torchrun`` (the
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` variables are set, and ``WORLD_SIZE`` > 1) it joins the process group with the
``gloo`` backend on CPU or ``nccl`` on CUDA; launched plainly it returns a single-process context, and every helper
below is then a no-op, so the same code runs both ways.

Work is split by striding: of $n$ items (classes, evaluation cells), rank $r$ of $W$ owns the items
$i \equiv r \pmod W$ ([`owned_indices`][hmdc_modules.distributed.owned_indices]).

Examples:
    >>> owned_indices(10, rank=1, world_size=3)
    [1, 4, 7]
    >>> ctx = init_distributed("cpu")  # a plain process: no process group is created
    >>> (ctx.rank, ctx.world_size, ctx.is_main, ctx.enabled)
    (0, 1, True, False)
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from hmdc_modules._validation import check_positive_int, describe
from hmdc_modules.balancer import GradientBalancer

__all__ = [
    "DistributedContext",
    "Interrupted",
    "all_gather_objects",
    "all_reduce_sum_",
    "any_rank",
    "barrier",
    "broadcast_module_",
    "broadcast_object",
    "first_line",
    "init_distributed",
    "on_main",
    "owned_indices",
    "resolve_device",
    "run_guarded",
    "shutdown_distributed",
    "sync_balancer_",
]

T = TypeVar("T")

DEFAULT_TIMEOUT = datetime.timedelta(hours=24)
"""How long a collective waits for the other ranks before failing. An evaluation's ranks meet only before and after
their share of cells, which can differ by hours at the paper's sizes (ViT-Base cells on one rank). A rank that dies
is noticed much sooner: its sockets close, and ``torchrun`` stops the others when one exits."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the job.

    Attributes:
        rank: This process's rank, in ``[0, world_size)``.
        world_size: Number of processes (1 when not launched by ``torchrun``).
        local_rank: Rank within this machine (selects the CUDA device).
        device: The device this process computes on.
        backend: ``"gloo"`` or ``"nccl"``; ``None`` without a process group.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def enabled(self) -> bool:
        """Whether a process group exists (more than one process)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints progress."""
        return self.rank == 0

    def owned(self, n: int) -> list[int]:
        """The indices of ``n`` items this rank owns (see [`owned_indices`][hmdc_modules.distributed.owned_indices])."""
        return owned_indices(n, self.rank, self.world_size)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; anything else as ``torch.device``.

    Raises:
        TypeError: If ``device`` is neither a string nor a ``torch.device``.
        ValueError: If the string is not a device name.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"`device` must be 'auto', a device name or a torch.device, got {describe(device)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"`device` must be 'auto' or a device name such as 'cpu' or 'cuda:0', got {device!r}"
        ) from error


def init_distributed(
    device: str | torch.device = "auto", *, timeout: datetime.timedelta = DEFAULT_TIMEOUT
) -> DistributedContext:
    """Join the ``torchrun`` process group if there is one, and pick this process's device.

    The backend follows the device: ``nccl`` for CUDA, ``gloo`` otherwise. With ``"auto"`` the device is
    ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU. Calling it again in the same process returns the
    existing group's context.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (made ``cuda:<LOCAL_RANK>`` under ``torchrun``) or a device.
        timeout: How long collectives wait for the other ranks.

    Returns:
        The [`DistributedContext`][hmdc_modules.distributed.DistributedContext].

    Raises:
        TypeError: If ``device`` is neither a string nor a ``torch.device``.
        ValueError: If ``device`` is not a device name or names CUDA where there is none, or the ``torchrun``
            variables are malformed or inconsistent.
    """
    resolved = resolve_device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` {device!r}: CUDA is not available on this machine")
    if not isinstance(timeout, datetime.timedelta):
        raise TypeError(f"`timeout` must be a datetime.timedelta, got {describe(timeout)}")
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"torchrun variables are inconsistent: RANK={rank}, WORLD_SIZE={world_size}")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if world_size == 1:
        return DistributedContext(0, 1, 0, resolved, None)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timeout)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, resolved, dist.get_backend())


def shutdown_distributed(ctx: DistributedContext, *, synchronize: bool = True) -> None:
    """Leave the process group (a no-op for a single process).

    With ``synchronize`` (the default), every rank first waits until the others get here, so that no rank tears
    down its connections while a peer is still working: the ranks leave together, and a rank that finished early
    (nothing left to train, say) does not exit before the rank writing the reports. A peer that has ended already
    is not waited for. Pass ``synchronize=False`` where the other ranks may never get here, such as after an error
    on this rank.

    Args:
        ctx: The context from [`init_distributed`][hmdc_modules.distributed.init_distributed].
        synchronize: Wait for the other ranks before leaving.
    """
    if ctx.enabled and dist.is_initialized():
        if synchronize:
            try:
                dist.barrier()
            except RuntimeError:  # gloo: "Connection closed by peer" (a DistError, or a plain RuntimeError)
                pass  # a peer ended first: nobody is left to wait for
        dist.destroy_process_group()


def owned_indices(n: int, rank: int, world_size: int) -> list[int]:
    """The items of ``range(n)`` that rank ``rank`` of ``world_size`` owns: ``rank, rank + W, rank + 2W, ...``.

    Every item has exactly one owner, the split depends only on the three numbers (every rank computes the same
    one), and owners differ by at most one item.

    Raises:
        TypeError: If an argument is not an int.
        ValueError: If ``n < 0``, ``world_size < 1`` or ``rank`` is outside ``[0, world_size)``.

    Examples:
        >>> owned_indices(5, 0, 2), owned_indices(5, 1, 2)
        ([0, 2, 4], [1, 3])
    """
    check_positive_int("n", n, minimum=0)
    check_positive_int("world_size", world_size)
    check_positive_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise ValueError(f"`rank` must be in [0, {world_size}), got {rank}")
    return list(range(rank, n, world_size))


def all_reduce_sum_(tensor: Tensor, ctx: DistributedContext) -> Tensor:
    """Sum ``tensor`` over all ranks, in place (unchanged for a single process).

    Where at most one rank holds a non-zero value in each element (per-class gradients of a class-split objective)
    the sum is exact: the result is bitwise what a single process computes.
    """
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, ctx: DistributedContext) -> bool:
    """Whether ``flag`` is true on at least one rank (every rank gets the same answer)."""
    if not ctx.enabled:
        return bool(flag)
    value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_collective_device(ctx))
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_gather_objects(obj: T, ctx: DistributedContext) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` for a single process."""
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: T, ctx: DistributedContext, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (picklable; tensors travel by value) on every rank; ``obj`` for a single process.

    Use it for what only one rank can read, such as a checkpoint on rank 0's machine.
    """
    if not ctx.enabled:
        return obj
    box: list[Any] = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(fn: Callable[[], T], ctx: DistributedContext, *, errors: tuple[type[Exception], ...] = (Exception,)) -> T:
    """Call ``fn`` on rank 0 only and give every rank its result, or make every rank raise the error it raised.

    For what only rank 0's machine can read (a checkpoint in the run folder): the other ranks need neither the file
    nor a second read. An error of one of the types in ``errors`` is re-raised on every rank as the same type with
    the same message, so every rank fails the same way; other errors propagate on rank 0 only (the other ranks then
    fail in the collective).

    Args:
        fn: Called without arguments on rank 0; its result must be picklable.
        ctx: The context.
        errors: The exception types to hand to every rank (each must accept a single message argument).

    Returns:
        ``fn()``'s result, on every rank.

    Examples:
        >>> on_main(lambda: 41 + 1, init_distributed("cpu"))
        42
    """
    outcome: tuple[bool, Any] = (True, None)
    if ctx.is_main:
        try:
            outcome = (True, fn())
        except errors as error:
            outcome = (False, (type(error), str(error)))
    if ctx.enabled:
        outcome = broadcast_object(outcome, ctx)
    ok, value = outcome
    if not ok:
        kind, message = value
        raise kind(message)
    return value


def barrier(ctx: DistributedContext) -> None:
    """Wait until every rank gets here (a no-op for a single process)."""
    if ctx.enabled:
        dist.barrier()


def broadcast_module_(module: nn.Module | Iterable[Tensor], ctx: DistributedContext, src: int = 0) -> None:
    """Copy the parameters and buffers of rank ``src``'s ``module`` to every rank, in place.

    Replicated networks trained with the same seeded updates stay identical on a deterministic CPU; on a GPU with
    non-deterministic kernels they may drift apart by rounding, and this re-synchronises them.

    Args:
        module: A module (its parameters and buffers) or an iterable of tensors.
        ctx: The context.
        src: The rank whose values win.
    """
    if not ctx.enabled:
        return
    tensors = list(module.parameters()) + list(module.buffers()) if isinstance(module, nn.Module) else list(module)
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=src)


class Interrupted(BaseException):
    """Raised inside a [`run_guarded`][hmdc_modules.distributed.run_guarded] job when SIGINT or SIGTERM arrives.

    A ``BaseException`` (like ``KeyboardInterrupt``), so ``except Exception`` blocks in the job do not swallow it
    and ``finally`` blocks (temporary files of atomic writes) still run.

    Attributes:
        signum: The signal's number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (its type's name when empty), at most ``limit`` characters.

    Examples:
        >>> first_line(RuntimeError("connection reset\\nby peer"))
        'connection reset'
    """
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


def run_guarded(
    job: Callable[[], int | None],
    ctx: DistributedContext,
    *,
    resume_hint: str = "",
    stream: TextIO | None = None,
) -> int:
    """Run a command's ``job`` so that stops and lost ranks end it with one line and a conventional exit status.

    While ``job`` runs, SIGINT (Ctrl-C) and SIGTERM raise [`Interrupted`][hmdc_modules.distributed.Interrupted] in
    it at once, and a ``torch.distributed.DistError`` (a peer process died: its socket closed under a collective)
    propagates out of it. Either way this prints one line to ``stream`` (standard error by default), prefixed with
    ``[rank r]`` under ``torchrun``, followed by ``resume_hint``, and returns:

    - ``130`` after SIGINT and ``143`` after SIGTERM (128 plus the signal number, as shells report them). Under
      ``torchrun`` a SIGTERM means the launcher stopped this rank because another one ended, and the line says so.
    - ``1`` after a lost peer.

    Otherwise it returns what ``job`` returns (``None`` counts as ``0``); other exceptions propagate unchanged. The
    previous signal handlers are restored on the way out. Jobs should write their files atomically and checkpoint
    at safe points, so that a stop at any moment leaves a resumable state; ``resume_hint`` says how to resume.

    Args:
        job: The work, called without arguments; returns an exit status or ``None``.
        ctx: The context from [`init_distributed`][hmdc_modules.distributed.init_distributed].
        resume_hint: Appended to the line (e.g. "the last checkpoint is intact: continue with --resume").
        stream: Where the line goes (default ``sys.stderr``).

    Returns:
        The exit status.

    Raises:
        ValueError: If called outside the main thread (signal handlers can only be installed there).

    Examples:
        >>> ctx = init_distributed("cpu")
        >>> run_guarded(lambda: None, ctx)
        0
        >>> def stopped() -> int:
        ...     raise Interrupted(signal.SIGINT)
        >>> run_guarded(stopped, ctx, resume_hint="run it again to continue", stream=sys.stdout)
        interrupted (SIGINT); run it again to continue
        130
    """
    out = stream if stream is not None else sys.stderr
    where = f"[rank {ctx.rank}] " if ctx.enabled else ""
    hint = f"; {resume_hint}" if resume_hint else ""

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = job()
        return 0 if result is None else int(result)
    except Interrupted as stop:
        if stop.signum == signal.SIGTERM and ctx.enabled:
            why = "error: stopped by the launcher (another process of the job ended)"
        else:
            why = f"interrupted ({signal.Signals(stop.signum).name})"
        print(f"{where}{why}{hint}", file=out, flush=True)
        return 128 + int(stop.signum)
    except dist.DistError as error:
        print(f"{where}error: lost contact with another process ({first_line(error)}){hint}", file=out, flush=True)
        return 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _collective_device(ctx: DistributedContext) -> torch.device:
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


def sync_balancer_(balancer: GradientBalancer, owned_groups: Iterable[int], ctx: DistributedContext) -> None:
    """Give every rank the full state of a [`GradientBalancer`][hmdc_modules.balancer.GradientBalancer] whose
    groups are split over ranks, in place.

    A thin wrapper of [`GradientBalancer.sync`][hmdc_modules.balancer.GradientBalancer.sync], which owns the
    merge (accumulator rows and counters from each group's owner, every rank's new sampling records, the calls of
    all ranks): call it whenever a whole state is needed, before a checkpoint, a plot or a ``state_dict``. The
    merged accumulators are exactly those a single process would hold.

    Args:
        balancer: The balancer, with the same configuration on every rank.
        owned_groups: The groups this rank balanced (each group owned by exactly one rank).
        ctx: The context; a no-op for a single process.

    Raises:
        TypeError: If ``owned_groups`` is not an iterable of ints.
        ValueError: If a group is claimed by no rank or by two.
    """
    if not ctx.enabled:
        return
    balancer.sync(owned_groups)

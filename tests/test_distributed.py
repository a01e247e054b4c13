"""Scale-out under torchrun: the distributed helpers, and the reference run on 2 processes against 1 (gloo)."""

from __future__ import annotations

import csv
import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import write_fake_cifar
from hypothesis import given, settings
from hypothesis import strategies as st

from hmdc_modules import GradientBalancer
from hmdc_modules.condensation import load_checkpoint, read_synthetic_set
from hmdc_modules.distributed import (
    DistributedContext,
    Interrupted,
    all_gather_objects,
    all_reduce_sum_,
    any_rank,
    broadcast_object,
    init_distributed,
    on_main,
    owned_indices,
    run_guarded,
    shutdown_distributed,
    sync_balancer_,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "hmdc_cifar10.py"

# three classes over two ranks: rank 0 owns classes 0 and 2, rank 1 owns class 1
RUN = [
    "--classes", "0,1,2", "--ipc", "1", "--factor", "2", "--iterations", "2", "--inner-steps", "2",
    "--model-steps", "1", "--projection-steps", "1", "--batch-real", "4", "--batch-train", "8",
    "--select-every", "1", "--balance-interval", "2", "--model-b", "test_vit", "--real-per-class", "0",
    "--init", "real", "--device", "cpu", "--quiet",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], processes: int | None) -> subprocess.Popen:
    """The example as one plain process (``processes=None``) or under torchrun, one thread per process."""
    launcher = [sys.executable]
    if processes is not None:
        launcher += ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-addr", "127.0.0.1"]
        launcher += ["--master-port", str(free_port())]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [*launcher, str(EXAMPLE), *args], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen) -> str:
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output
    return output


# ----------------------------------------------------------------------------------------------------------------
# The helpers
# ----------------------------------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(n=st.integers(0, 40), world_size=st.integers(1, 9))
def test_owned_indices_partition_the_items(n: int, world_size: int) -> None:
    parts = [owned_indices(n, rank, world_size) for rank in range(world_size)]
    assert sorted(i for part in parts for i in part) == list(range(n))  # every item exactly once
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(all(i % world_size == rank for i in part) for rank, part in enumerate(parts))


def test_owned_indices_bad_input() -> None:
    with pytest.raises(ValueError, match=r"`rank` must be in \[0, 2\), got 2"):
        owned_indices(4, 2, 2)
    with pytest.raises(ValueError, match="`world_size`"):
        owned_indices(4, 0, 0)
    with pytest.raises(TypeError, match="`n`"):
        owned_indices(4.0, 0, 1)  # type: ignore[arg-type]


def test_a_plain_process_is_a_single_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main, ctx.owned(3)) == (0, 1, False, True, [0, 1, 2])
    x = torch.arange(3.0)
    assert all_reduce_sum_(x, ctx) is x and torch.equal(x, torch.arange(3.0))
    assert any_rank(True, ctx) and not any_rank(False, ctx)
    assert all_gather_objects({"a": 1}, ctx) == [{"a": 1}] and broadcast_object(5, ctx) == 5
    balancer = GradientBalancer(2, num_groups=3)
    sync_balancer_(balancer, [0], ctx)  # nothing to merge
    shutdown_distributed(ctx)


def test_inconsistent_torchrun_variables_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer, got 'two'"):
        init_distributed("cpu")
    with pytest.raises(TypeError, match="`device`"):
        init_distributed(0)  # type: ignore[arg-type]
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"`device` must be 'auto' or a device name .* got 'gpu0'"):
        init_distributed("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="`device` 'cuda': CUDA is not available on this machine"):
            init_distributed("cuda")


def test_run_guarded_turns_signals_and_lost_ranks_into_one_line_and_an_exit_status(capsys) -> None:
    ctx = init_distributed("cpu")
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert run_guarded(lambda: None, ctx) == 0 and run_guarded(lambda: 3, ctx) == 3

    def sigterm() -> None:  # a real signal, delivered while the job runs
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        raise AssertionError("the signal should have stopped the job")

    assert run_guarded(sigterm, ctx, resume_hint="run it again") == 143
    assert capsys.readouterr().err == "interrupted (SIGTERM); run it again\n"

    def sigint() -> None:
        raise Interrupted(signal.SIGINT)

    assert run_guarded(sigint, ctx) == 130
    assert capsys.readouterr().err == "interrupted (SIGINT)\n"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers restored

    two = DistributedContext(1, 2, 1, torch.device("cpu"), "gloo")  # as rank 1 of a job (no collective is used)

    def lost() -> None:
        raise torch.distributed.DistError("Connection closed by peer\nmore detail")

    assert run_guarded(lost, two, resume_hint="use --resume") == 1
    assert capsys.readouterr().err == (
        "[rank 1] error: lost contact with another process (Connection closed by peer); use --resume\n"
    )
    assert run_guarded(sigterm, two) == 143
    assert capsys.readouterr().err == "[rank 1] error: stopped by the launcher (another process of the job ended)\n"
    with pytest.raises(KeyError):  # any other error propagates unchanged
        run_guarded(lambda: {}["x"], ctx)


def test_on_main_hands_the_result_or_the_error_to_every_rank() -> None:
    ctx = init_distributed("cpu")
    assert on_main(lambda: {"a": 1}, ctx) == {"a": 1}

    def missing() -> None:
        raise FileNotFoundError("no checkpoint at 'x'")

    with pytest.raises(FileNotFoundError, match="no checkpoint at 'x'"):
        on_main(missing, ctx, errors=(FileNotFoundError,))


def _balancer_calls(balancer: GradientBalancer, groups: list[int], rounds: int) -> None:
    """Two losses of very different gradient scales per group; group g's scales depend on g."""
    for r in range(rounds):
        for g in groups:
            x = torch.full((4,), 1.0 + 0.1 * r, requires_grad=True)
            losses = [(g + 1.0) * x.sum(), 1e-3 * (r + 1.0) * (x**2).sum() / (g + 1.0)]
            balancer.backward(losses, x, group=g)


def _torchrun_environment(rank: int, world_size: int, port: int) -> None:
    """The variables torchrun would set for a spawned worker, on this machine."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )


def _sync_worker(rank: int, world_size: int, port: int, out: str) -> None:
    _torchrun_environment(rank, world_size, port)
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    balancer = GradientBalancer(2, num_groups=5, interval=2, init_value=1e-6)
    sync_balancer_(balancer, ctx.owned(5), ctx)
    _balancer_calls(balancer, ctx.owned(5), rounds=3)
    sync_balancer_(balancer, ctx.owned(5), ctx)
    _balancer_calls(balancer, ctx.owned(5), rounds=2)  # after a sync the counts go on from the merged state
    sync_balancer_(balancer, ctx.owned(5), ctx)
    torch.save(balancer.state_dict(), Path(out) / f"rank{rank}.pt")
    shutdown_distributed(ctx)


def test_sync_balancer_merges_to_the_single_process_state(tmp_path: Path) -> None:
    mp.spawn(_sync_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    single = GradientBalancer(2, num_groups=5, interval=2, init_value=1e-6)
    _balancer_calls(single, list(range(5)), rounds=3)
    _balancer_calls(single, list(range(5)), rounds=2)
    for rank in range(2):
        merged = GradientBalancer(2, num_groups=5, interval=2, init_value=1e-6)
        merged.load_state_dict(torch.load(tmp_path / f"rank{rank}.pt", weights_only=True))
        assert torch.equal(merged.accumulator, single.accumulator)  # bitwise: each row computed by one rank
        assert torch.equal(merged.num_samples, single.num_samples)
        assert torch.equal(merged.num_calls, single.num_calls)
        assert merged.global_step == single.global_step == 25
        assert sorted((r.group, r.magnitudes) for r in merged.history) == sorted(
            (r.group, r.magnitudes) for r in single.history
        )


def _shutdown_worker(rank: int, world_size: int, port: int, out: str, synchronize: bool) -> None:
    """Rank 1 reaches the shutdown late; rank 0 notes whether rank 1 had arrived when its own shutdown returned."""
    _torchrun_environment(rank, world_size, port)
    ctx = init_distributed("cpu")
    arrived = Path(out) / "rank1_arrived"
    if rank == 1:
        time.sleep(1.0)  # the last rank still writing its reports
        arrived.write_text("1")
    shutdown_distributed(ctx, synchronize=synchronize)
    if rank == 0:
        (Path(out) / "rank0_saw").write_text(str(int(arrived.exists())))
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("synchronize", [True, False])
def test_shutdown_waits_for_every_rank_unless_told_not_to(tmp_path: Path, synchronize: bool) -> None:
    mp.spawn(_shutdown_worker, args=(2, free_port(), str(tmp_path), synchronize), nprocs=2, join=True)
    assert (tmp_path / "rank0_saw").read_text() == ("1" if synchronize else "0")


def _early_exit_worker(rank: int, world_size: int, port: int) -> None:
    """Rank 1 leaves without waiting and exits; rank 0's synchronised shutdown must still return."""
    _torchrun_environment(rank, world_size, port)
    ctx = init_distributed("cpu", timeout=datetime.timedelta(seconds=60))
    if rank == 0:
        time.sleep(1.0)  # rank 1 is gone by now
    shutdown_distributed(ctx, synchronize=rank == 0)


def test_a_synchronised_shutdown_does_not_wait_for_a_rank_that_ended() -> None:
    mp.spawn(_early_exit_worker, args=(2, free_port()), nprocs=2, join=True)


# ----------------------------------------------------------------------------------------------------------------
# The reference run under torchrun
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("cifar3"), classes=(0, 1, 2), per_class=12)


@pytest.fixture(scope="module")
def reference_runs(three_classes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same run with one process and with two (started side by side); returns their run folders."""
    root = tmp_path_factory.mktemp("runs")
    one = start([*RUN, "--data-root", str(three_classes), "--out", str(root / "one")], None)
    two = start([*RUN, "--data-root", str(three_classes), "--out", str(root / "two")], 2)
    finish(one)
    finish(two)
    return root / "one", root / "two"


def _metric_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_two_processes_condense_the_same_set_as_one(reference_runs: tuple[Path, Path]) -> None:
    one, two = reference_runs
    a, b = read_synthetic_set(one / "synthetic.pt"), read_synthetic_set(two / "synthetic.pt")
    assert a.iteration == b.iteration == 2
    assert torch.equal(a.images, b.images)  # bitwise: one thread per process, deterministic CPU kernels
    ca, cb = load_checkpoint(one / "checkpoint.pt"), load_checkpoint(two / "checkpoint.pt")
    for key in ("accumulator", "num_samples", "num_calls"):
        assert torch.equal(ca["balancer"][key], cb["balancer"][key])
    rows_a, rows_b = _metric_rows(one), _metric_rows(two)
    assert [r["global_step"] for r in rows_a] == [r["global_step"] for r in rows_b] == [str(i) for i in range(4)]
    for ra, rb in zip(rows_a, rows_b, strict=True):  # class means: the same terms, summed in another order
        for name in ("gm_a", "gm_b", "md", "w_md", "model_loss", "projection_loss"):
            assert float(ra[name]) == pytest.approx(float(rb[name]), rel=1e-9, abs=1e-12)


def _checkpoint_iteration(path: Path) -> int:
    try:
        return int(load_checkpoint(path)["iteration"])
    except (FileNotFoundError, ValueError):
        return 0


def _rank_pid(launcher: subprocess.Popen, rank: int, deadline: float) -> int:
    """The pid of the torchrun worker with RANK=rank (found through /proc)."""
    while time.monotonic() < deadline:
        pending, seen = [launcher.pid], set()
        while pending:
            pid = pending.pop()
            if pid in seen:
                continue
            seen.add(pid)
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending += [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if pid != launcher.pid and f"RANK={rank}".encode() in environ:
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no worker with RANK={rank}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker's pid through Linux /proc")
def test_killing_one_rank_stops_the_job_and_the_checkpoint_resumes(
    reference_runs: tuple[Path, Path], three_classes: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    args = [*RUN, "--data-root", str(three_classes), "--out", str(out)]
    job = start(args, 2)
    deadline = time.monotonic() + 300
    victim = _rank_pid(job, 1, deadline)
    while not _checkpoint_iteration(out / "checkpoint.pt"):  # after the first outer iteration
        assert job.poll() is None and time.monotonic() < deadline, job.stdout.read() if job.stdout else ""
        time.sleep(0.01)
    os.kill(victim, signal.SIGKILL)
    output = job.communicate(timeout=300)[0]
    assert job.returncode != 0
    assert "SIGKILL" in output or "Signal 9" in output, output  # torchrun names the failed rank and its signal
    assert "the last checkpoint is intact" in output and "--resume" in output, output  # the survivor says what to do
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["iteration"] == 1
    finish(start([*args, "--resume"], None))  # resumed on another world size: one process
    one, _ = reference_runs
    assert torch.equal(read_synthetic_set(out / "synthetic.pt").images, read_synthetic_set(one / "synthetic.pt").images)

"""The evaluation suite under torchrun: 2 processes give the 1-process tables, resume, and the rank bookkeeping.

The command-line runs are real ``torchrun`` jobs (gloo, 2 processes) on the generated ``fake_cifar``; the rank
bookkeeping (no shared filesystem, records taken from another rank's folder, failures on one rank) runs in one
process, its ranks as threads meeting in a small stand-in for ``all_gather_object``.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import hmdc_modules.evaluation.ranks as ranks
import hmdc_modules.evaluation.train as training
from hmdc_modules.distributed import DistributedContext, init_distributed, owned_indices
from hmdc_modules.evaluation import (
    Cell,
    CellResult,
    EvalSettings,
    ModelSpec,
    SetSpec,
    SuiteReport,
    make_random_real_set,
    plan_cells,
    run_suite,
)

REPO = Path(__file__).resolve().parents[1]
TINY_CNN = ModelSpec("convnet", width=8)


@pytest.fixture(scope="module")
def two_sets(fake_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two run folders of the random-real baseline (2 images a class, draws 0 and 1)."""
    root = tmp_path_factory.mktemp("sets")
    for seed in (0, 1):
        make_random_real_set(fake_cifar, root / f"rnd{seed}", ipc=2, seed=seed, progress=False)
    return [root / "rnd0", root / "rnd1"]


def evaluate_command(sets: list[Path], cifar: Path, out: Path, processes: int) -> list[str]:
    """``python -m hmdc_modules.evaluate`` on the two sets, plainly or under ``torchrun --standalone``."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    args = [*map(str, sets), "--models", "convnet,test_vit", "--seeds", "2", "--epochs", "2", "--eval-every", "1"]
    args += ["--convnet-width", "8", "--data-root", str(cifar), "--out", str(out), "--device", "cpu", "--quiet"]
    return [*launcher, "-m", "hmdc_modules.evaluate", *args]


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")  # buffered: each log line is one flushed write
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
    return output


def cells_by_key(out: Path) -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((out / "cells").glob("*.json"))}


def report_order(out: Path) -> list[tuple[str, str, int]]:
    cells = json.loads((out / "results.json").read_text())["cells"]
    return [(c["set_name"], c["model"]["label"], c["seed"]) for c in cells]


def same_numbers(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Bitwise: the accuracies, the test history and the last training loss of one cell in two runs."""
    fields = ("final_accuracy", "best_accuracy", "best_epoch", "history", "final_loss", "num_train", "num_test")
    return all(a[f] == b[f] for f in fields)


@pytest.fixture(scope="module")
def two_runs(two_sets: list[Path], fake_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same evaluation on 2 processes (folder A) and on 1 (folder B), run side by side."""
    root = tmp_path_factory.mktemp("runs")
    jobs = {
        "A": start(evaluate_command(two_sets, fake_cifar, root / "A", processes=2), root),
        "B": start(evaluate_command(two_sets, fake_cifar, root / "B", processes=1), root),
    }
    logs = {name: finish(job) for name, job in jobs.items()}
    return {"root": root, "A": root / "A", "B": root / "B", "logs": logs}


# ----------------------------------------------------------------------------------------------------------------
# Real torchrun jobs
# ----------------------------------------------------------------------------------------------------------------


def test_two_processes_give_the_one_process_tables(two_runs: dict[str, Any]) -> None:
    a, b, log = two_runs["A"], two_runs["B"], two_runs["logs"]["A"]
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()
    assert (
        json.loads((a / "results.json").read_text())["summary"]
        == json.loads((b / "results.json").read_text())["summary"]
    )
    assert (a / "settings.json").read_text() == (b / "settings.json").read_text()
    cells_a, cells_b = cells_by_key(a), cells_by_key(b)
    assert len(cells_a) == 8 and sorted(cells_a) == sorted(cells_b)
    assert all(same_numbers(cells_a[key], cells_b[key]) for key in cells_a)
    assert report_order(a) == report_order(b)  # the plan's order, whoever trained the cells
    # rank r trained the cells r, r + 2, ... of the plan (positions r + 1, r + 3, ... of 8), and only rank 0 printed
    # the summary
    for rank in (0, 1):
        finished = [line for line in log.splitlines() if line.startswith(f"[rank {rank}] ") and ": final" in line]
        positions = sorted(int(line.split("[")[2].split("/")[0]) for line in finished)
        assert positions == list(range(rank + 1, 9, 2)), log
    assert log.count("8 cells trained, 0 already done") == 1
    assert "8 cells trained, 0 already done" in two_runs["logs"]["B"] and "[rank" not in two_runs["logs"]["B"]


def test_two_processes_resume_an_interrupted_evaluation(
    two_runs: dict[str, Any], two_sets: list[Path], fake_cifar: Path
) -> None:
    folder = two_runs["root"] / "A_resumed"
    shutil.copytree(two_runs["A"], folder)
    removed = folder / "cells" / "rnd1--test_vit--seed1.json"
    before = json.loads(removed.read_text())
    removed.unlink()
    log = finish(start(evaluate_command(two_sets, fake_cifar, folder, processes=2), two_runs["root"]))
    assert "1 cells trained, 7 already done" in log
    training_lines = [line for line in log.splitlines() if ": training 2 epochs" in line]
    assert training_lines == ["[rank 0] [8/8] rnd1 / test_vit / seed 1: training 2 epochs on cpu"], log
    assert same_numbers(json.loads(removed.read_text()), before)
    assert (folder / "results.csv").read_bytes() == (two_runs["B"] / "results.csv").read_bytes()
    with open(folder / "results.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2 * (2 + 3)


# ----------------------------------------------------------------------------------------------------------------
# The split, and the single-process path
# ----------------------------------------------------------------------------------------------------------------


def tiny_settings(root: Path) -> EvalSettings:
    return EvalSettings(epochs=1, eval_every=0, batch_size=8, data_root=str(root))


def test_single_process_context_is_the_plain_run(two_sets: list[Path], fake_cifar: Path, tmp_path: Path) -> None:
    ctx = init_distributed("cpu")
    assert (ctx.world_size, ctx.enabled, ctx.owned(5)) == (1, False, [0, 1, 2, 3, 4])
    settings, lines = tiny_settings(fake_cifar), []
    plain = run_suite(two_sets, [TINY_CNN], [0, 1], settings, tmp_path / "plain", device="cpu", progress=False)
    with_ctx = run_suite(
        two_sets, [TINY_CNN], [0, 1], settings, tmp_path / "ctx", progress=False, log=lines.append, dist=ctx
    )
    assert [r.key for r in with_ctx.results] == [r.key for r in plain.results]
    assert all(same_numbers(a.to_dict(), b.to_dict()) for a, b in zip(with_ctx.results, plain.results, strict=True))
    assert with_ctx.rows == plain.rows and with_ctx.files.keys() == plain.files.keys()
    assert not any(line.startswith("[rank") for line in lines) and len(lines) == 8  # training, finished
    # the pending cells of W ranks: rank r trains pending[r::W], every cell once
    cells = plan_cells([SetSpec.from_path(p) for p in two_sets], [TINY_CNN, ModelSpec("test_vit")], [0, 1, 2])
    shares = [[cells[i].key for i in owned_indices(len(cells), rank, 3)] for rank in range(3)]
    assert shares[1] == [c.key for c in cells[1::3]] and sorted(k for share in shares for k in share) == sorted(
        c.key for c in cells
    )
    with pytest.raises(TypeError, match="`dist` must be a DistributedContext"):
        run_suite(two_sets, [TINY_CNN], [0], settings, tmp_path / "x", dist="gloo")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------
# Rank bookkeeping, ranks as threads (no shared filesystem: one folder per rank)
# ----------------------------------------------------------------------------------------------------------------


class ThreadGroup:
    """``all_gather_objects`` for ranks that are threads of this process (objects travel pickled, like gloo's)."""

    def __init__(self, world_size: int) -> None:
        self.slots: list[bytes | None] = [None] * world_size
        self.meet = threading.Barrier(world_size, timeout=30)

    def all_gather_objects(self, obj: Any, ctx: DistributedContext) -> list[Any]:
        self.slots[ctx.rank] = pickle.dumps(obj)
        self.meet.wait()
        gathered = [pickle.loads(data) for data in self.slots]  # type: ignore[arg-type]
        self.meet.wait()  # nobody writes the next round's slot before everyone read this one
        return gathered


def run_ranks(
    monkeypatch: pytest.MonkeyPatch, world_size: int, suite: Callable[[DistributedContext], SuiteReport]
) -> list[SuiteReport | BaseException]:
    """``suite(ctx)`` on ``world_size`` thread ranks; each rank's report, or what it raised."""
    group = ThreadGroup(world_size)
    monkeypatch.setattr(ranks, "all_gather_objects", group.all_gather_objects)
    outcomes: list[SuiteReport | BaseException] = [RuntimeError("no outcome")] * world_size

    def rank_main(rank: int) -> None:
        try:
            outcomes[rank] = suite(DistributedContext(rank, world_size, rank, torch.device("cpu"), "threads"))
        except BaseException as error:  # handed to the test; a rank left waiting fails at the barrier's timeout
            outcomes[rank] = error

    threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return outcomes


@pytest.fixture
def serial_cells(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Train one cell at a time (``run_cell`` seeds the global RNG) and record ``(rank thread, cell key)``."""
    lock, calls, real_run_cell = threading.Lock(), [], training.run_cell

    def serial(cell: Cell, *args: Any, **kwargs: Any) -> CellResult:
        with lock:
            calls.append((threading.current_thread().name, cell.key))
            return real_run_cell(cell, *args, **kwargs)

    monkeypatch.setattr(training, "run_cell", serial)
    return calls


def test_ranks_without_a_shared_filesystem(
    two_sets: list[Path], fake_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serial_cells: list
) -> None:
    settings, logs = tiny_settings(fake_cifar), {0: [], 1: []}

    def suite(ctx: DistributedContext) -> SuiteReport:
        out = tmp_path / f"node{ctx.rank}"
        return run_suite(
            two_sets, [TINY_CNN], [0, 1], settings, out, progress=False, log=logs[ctx.rank].append, dist=ctx
        )

    alone = run_suite(two_sets, [TINY_CNN], [0, 1], settings, tmp_path / "alone", device="cpu", progress=False)
    first, second = run_ranks(monkeypatch, 2, suite)
    assert isinstance(first, SuiteReport) and isinstance(second, SuiteReport), (first, second)
    keys = [r.key for r in alone.results]
    assert [r.key for r in first.results] == [r.key for r in second.results] == keys
    assert all(same_numbers(a.to_dict(), b.to_dict()) for a, b in zip(first.results, alone.results, strict=True))
    assert first.rows == second.rows == alone.rows and (first.trained, second.trained) == (4, 4)
    assert first.files.keys() == alone.files.keys() and second.files == {}
    assert (tmp_path / "node0" / "results.csv").read_bytes() == (tmp_path / "alone" / "results.csv").read_bytes()
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    assert sorted(p.stem for p in (node0 / "cells").glob("*.json")) == sorted(keys)  # every record on rank 0
    assert sorted(p.stem for p in (node1 / "cells").glob("*.json")) == keys[1::2]  # rank 1 kept its own
    assert (node0 / "settings.json").is_file() and not (node1 / "settings.json").exists()
    assert not list(node1.glob("results*")) and not (node1 / "accuracy.png").exists()
    assert all(line.startswith("[rank 1] ") for line in logs[1]) and len(logs[1]) == 4

    # rank 0's machine lost a record (say, an interrupted job): it comes from rank 1's folder, nothing trains
    (node0 / "cells" / f"{keys[1]}.json").unlink()
    serial_cells.clear()
    logs[0].clear()
    first, second = run_ranks(monkeypatch, 2, suite)
    assert isinstance(first, SuiteReport) and isinstance(second, SuiteReport), (first, second)
    assert serial_cells == [] and (first.trained, first.skipped, second.skipped) == (0, 4, 4)
    assert (node0 / "cells" / f"{keys[1]}.json").is_file() and first.rows == alone.rows
    assert any(f"{keys[1].split('--')[0]} / convnet / seed 1" in line and "rank 1's folder" in line for line in logs[0])


def test_a_failure_on_one_rank_stops_every_rank(
    two_sets: list[Path], fake_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serial_cells: list
) -> None:
    settings = tiny_settings(fake_cifar)
    real_run_cell = training.run_cell

    def failing(cell: Cell, *args: Any, **kwargs: Any) -> CellResult:
        if cell.key.endswith("seed1"):  # the cells rank 1 owns
            raise ValueError("the set is broken on this machine")
        return real_run_cell(cell, *args, **kwargs)

    monkeypatch.setattr(training, "run_cell", failing)

    def suite(ctx: DistributedContext) -> SuiteReport:
        return run_suite(two_sets, [TINY_CNN], [0, 1], settings, tmp_path / f"node{ctx.rank}", progress=False, dist=ctx)

    first, second = run_ranks(monkeypatch, 2, suite)
    assert isinstance(first, ValueError) and str(first) == "rank 1 of 2: the set is broken on this machine"
    assert isinstance(second, ValueError) and str(second) == "the set is broken on this machine"
    # rank 0 finished its cells and stored them; no reports were written
    assert sorted(p.stem for p in (tmp_path / "node0" / "cells").glob("*.json")) == [
        "rnd0--convnet--seed0",
        "rnd1--convnet--seed0",
    ]
    assert not (tmp_path / "node0" / "results.csv").exists()

    # an input only one rank lacks (its settings file disagrees) stops both before any training
    (tmp_path / "node1" / "settings.json").write_text(json.dumps(tiny_settings(fake_cifar).to_dict() | {"epochs": 3}))
    serial_cells.clear()
    first, second = run_ranks(monkeypatch, 2, suite)
    assert isinstance(second, ValueError) and "other settings (epochs: 3 -> 1" in str(second)
    assert isinstance(first, ValueError) and str(first).startswith("rank 1 of 2: `out`")
    assert serial_cells == []

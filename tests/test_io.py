"""Atomic writes, checkpoints that keep their predecessor, one-line errors for bad files, and the seed mixer."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from hmdc_modules.condensation import (
    CheckpointError,
    FileFormatError,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    derive_seed,
    load_checkpoint,
    load_latest_checkpoint,
    load_synthetic_set,
    previous_checkpoint_path,
    read_synthetic_set,
    save_checkpoint,
    save_figure,
    save_synthetic_set,
)

TORCH_DIR = os.path.dirname(torch.__file__)


def _example_derived_seed(seed: int, *counters: int) -> int:
    """The formula of ``derived_seed`` in examples/hmdc_cifar10.py, written out independently."""
    value = seed
    for c in counters:
        value = (value * 1_000_003 + c + 1) % (2**62)
    return value


def _last_frame_outside_torch(info: pytest.ExceptionInfo[BaseException]) -> None:
    last = info.traceback[-1].path
    assert not str(last).startswith(TORCH_DIR), f"error raised inside torch: {last}"


# ------------------------------------------------------------------------------------------------------------------
# derive_seed
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed,counters",
    [(0, ()), (0, (0,)), (1, (2, 3)), (2024, (7, 0, 9, 0xA06)), (2**61, (5, 0xC0DE, 1)), (-3, (4,))],
)
def test_derive_seed_equals_the_example_formula(seed: int, counters: tuple[int, ...]) -> None:
    assert derive_seed(seed, *counters) == _example_derived_seed(seed, *counters)


def test_derive_seed_distinguishes_streams_and_orders() -> None:
    seeds = {derive_seed(0, a, b) for a in range(20) for b in range(20)}
    assert len(seeds) == 400
    assert derive_seed(3, 1, 2) != derive_seed(3, 2, 1)
    assert derive_seed(3, 0) != 3  # the +1: a zero counter still changes the seed


@pytest.mark.parametrize("seed", [0, 1, 17, 2**40, 2**62 + 5])
@pytest.mark.parametrize("stream", [1, 2])
def test_derive_seed_reproduces_the_evaluation_stream_formula(seed: int, stream: int) -> None:
    modulus = 2**63 - 1
    assert derive_seed(seed, stream - 1, modulus=modulus) == (seed * 1_000_003 + stream) % modulus


# ------------------------------------------------------------------------------------------------------------------
# Atomic writers and the figure saver
# ------------------------------------------------------------------------------------------------------------------


def test_atomic_writers_write_and_replace(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "deep" / "a.txt", "one\n")
    assert path.read_text() == "one\n"
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    atomic_torch_save({"v": torch.arange(3)}, tmp_path / "t.pt")
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["v"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "deep", "t.pt"]  # no temporary file left


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a.txt", "old")

    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"x": Boom()}, path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_save_figure_writes_a_png_of_the_figure_size(tmp_path: Path) -> None:
    from PIL import Image

    figure = Figure(figsize=(3, 2))
    figure.subplots().plot([0, 1], [0, 1])
    path = save_figure(figure, tmp_path / "f.png", dpi=40)
    assert Image.open(path).size == (120, 80)


def test_no_pyplot_state_is_used(tmp_path: Path) -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    save_figure(Figure(figsize=(1, 1)), tmp_path / "f.png")
    assert matplotlib.get_backend() == backend


# ------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------------------------


def test_save_checkpoint_keeps_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1}, path)
    assert not previous_checkpoint_path(path).exists()
    save_checkpoint({"step": 2}, path)
    save_checkpoint({"step": 3}, path)
    assert load_checkpoint(path) == {"step": 3}
    assert load_checkpoint(tmp_path / "checkpoint.prev.pt") == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]
    save_checkpoint({"step": 4}, path, keep_previous=False)
    assert load_checkpoint(tmp_path / "checkpoint.prev.pt") == {"step": 2}


def test_failed_checkpoint_write_rotates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 3}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"step": 2} and load_checkpoint(previous_checkpoint_path(path)) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


class _RunsCode:
    """Pickles to a call that would create a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _damage(kind: str, path: Path, tmp_path: Path) -> None:
    if kind == "truncated":
        good = path.read_bytes()
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).byte().numpy())
    elif kind == "code":
        torch.save({"step": _RunsCode(tmp_path / "marker")}, path)
    elif kind == "plain-pickle":
        path.write_bytes(pickle.dumps({"step": 1}))
    else:  # pragma: no cover
        raise AssertionError(kind)


DAMAGES = ["truncated", "empty", "random", "code", "plain-pickle"]
EXPECTED_REASON = {
    "truncated": "truncated or corrupt",
    "empty": "empty (0 bytes)",
    "random": "not a torch file",
    "code": "could run code",
    "plain-pickle": "not a torch file",
}


@pytest.mark.parametrize("kind", DAMAGES)
def test_bad_checkpoint_is_one_clear_line(kind: str, tmp_path: Path) -> None:
    path = save_checkpoint({"step": torch.arange(1000)}, tmp_path / "checkpoint.pt")
    _damage(kind, path, tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message and str(path) in message and EXPECTED_REASON[kind] in message
    assert "expected a checkpoint" in message and "start the run afresh" in message
    assert "weights_only=False" not in message and "Weights only load failed" not in message
    assert info.value.__cause__ is None and info.value.__context__ is None  # no torch traceback attached
    _last_frame_outside_torch(info)
    assert not (tmp_path / "marker").exists()  # the pickled call never ran


@pytest.mark.parametrize("kind", DAMAGES)
def test_latest_checkpoint_falls_back_to_the_previous_one(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": torch.tensor(1)}, path)
    save_checkpoint({"step": torch.tensor(2)}, path)
    _damage(kind, path, tmp_path)
    loaded = load_latest_checkpoint(path)
    assert int(loaded.state["step"]) == 1 and loaded.path == tmp_path / "checkpoint.prev.pt"
    assert loaded.message is not None and "\n" not in loaded.message
    assert str(path) in loaded.message and "checkpoint.prev.pt" in loaded.message


def test_latest_checkpoint_reads_the_newest_when_it_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path)
    assert load_latest_checkpoint(path) == ({"step": 2}, path, None)


def test_latest_checkpoint_after_a_crash_between_renames(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path)
    path.unlink()  # what a crash after renaming the old file away (no hard links) would leave
    loaded = load_latest_checkpoint(path)
    assert loaded.state == {"step": 1} and f"no checkpoint file at '{path}'" in (loaded.message or "")


def test_latest_checkpoint_when_both_are_bad(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path)
    path.write_bytes(b"")
    previous_checkpoint_path(path).write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="neither checkpoint is readable") as info:
        load_latest_checkpoint(path)
    assert "\n" not in str(info.value) and "checkpoint.prev.pt" in str(info.value)
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        load_latest_checkpoint(tmp_path / "none.pt")


def test_checkpoint_holding_a_list_is_refused(tmp_path: Path) -> None:
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, expected a checkpoint dict"):
        load_checkpoint(tmp_path / "list.pt")


# ------------------------------------------------------------------------------------------------------------------
# Synthetic-set files: the same one-line errors
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("reader", [read_synthetic_set, load_synthetic_set])
def test_bad_synthetic_set_is_one_clear_line(kind: str, reader, tmp_path: Path) -> None:
    path = tmp_path / "synthetic.pt"
    save_synthetic_set(
        path, torch.zeros(4, 3, 8, 8), torch.tensor([0, 0, 1, 1]), mean=(0, 0, 0), std=(1, 1, 1), factor=2, ipc=2,
        iteration=0,
    )  # fmt: skip
    _damage(kind, path, tmp_path)
    with pytest.raises(FileFormatError) as info:
        reader(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message and str(path) in message and EXPECTED_REASON[kind] in message
    assert "synthetic-set" in message and "weights_only=False" not in message
    _last_frame_outside_torch(info)
    assert not (tmp_path / "marker").exists()

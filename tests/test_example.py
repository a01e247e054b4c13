"""The reference run, examples/hmdc_cifar10.py, at a tiny size on generated data."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch

from hmdc_modules.condensation import ConvNet, load_checkpoint, load_synthetic_set, read_synthetic_set

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "hmdc_cifar10.py"

TINY = [
    "--classes", "0,1", "--ipc", "1", "--factor", "2", "--iterations", "2", "--inner-steps", "2",
    "--model-steps", "1", "--projection-steps", "1", "--batch-real", "4", "--batch-train", "8",
    "--select-every", "1", "--balance-interval", "1", "--model-b", "test_vit", "--real-per-class", "0", "--quiet",
]  # fmt: skip


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hmdc_cifar10_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example()


def run_subprocess(args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # two runs at once on two cores
    return subprocess.Popen(
        [sys.executable, str(EXAMPLE), *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def test_tiny_run_writes_every_artefact(example: ModuleType, fake_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert example.main([*TINY, "--data-root", str(fake_cifar), "--out", str(out)]) == 0
    artefacts = ("config.json", "synthetic.pt", "grid.png", "balancer.png", "losses.png", "metrics.csv")
    for name in (*artefacts, "checkpoint.pt"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["ipc"] == 1 and config["model_b"] == "test_vit"
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # 2 iterations x 2 image updates
    for key in ("gm_a", "gm_b", "md", "w_gm_a", "w_gm_b", "w_md", "seconds", "model_loss", "projection_loss"):
        assert key in rows[0], key
        assert all(torch.isfinite(torch.tensor(float(r[key]))) for r in rows)
    # balanced weights: the largest is exactly one in every class, so their class mean is at most one
    assert all(max(float(r["w_gm_a"]), float(r["w_gm_b"]), float(r["w_md"])) <= 1.0 + 1e-6 for r in rows)

    stored = read_synthetic_set(out / "synthetic.pt")
    assert stored.iteration == 2 and stored.factor == 2 and stored.ipc == 1
    assert stored.images.shape == (2, 3, 32, 32)
    assert stored.labels.tolist() == [0, 1]
    # the saved set loads back as decoded images and trains a model for a step
    dataset = load_synthetic_set(out / "synthetic.pt")
    x, y = dataset.tensors
    assert x.shape == (8, 3, 32, 32) and sorted(y.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    model = ConvNet(num_classes=10)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_images_change_and_stay_in_pixel_range(example: ModuleType, fake_cifar: Path, tmp_path: Path) -> None:
    args = [*TINY, "--data-root", str(fake_cifar), "--init", "real"]
    assert example.main([*args, "--out", str(tmp_path / "a"), "--iterations", "1", "--inner-steps", "1"]) == 0
    first = read_synthetic_set(tmp_path / "a" / "synthetic.pt").images
    cfg = example.parse_config([*args, "--out", str(tmp_path / "b")])
    real = example.load_real_data(cfg, torch.device("cpu"))
    init = example.initial_images(cfg, real, torch.device("cpu")).flatten(0, 1)
    assert not torch.equal(first, init)  # an image update happened
    mean = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
    std = torch.tensor((0.2023, 0.1994, 0.2010)).view(1, 3, 1, 1)
    pixels = first * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


@pytest.mark.parametrize("switch", ["--single-model", "--no-balancer", "--no-distillation"])
def test_ablation_switches_run(example: ModuleType, fake_cifar: Path, tmp_path: Path, switch: str) -> None:
    out = tmp_path / "run"
    args = [*TINY, "--iterations", "1", "--inner-steps", "1", "--data-root", str(fake_cifar), "--out", str(out)]
    assert example.main([*args, switch]) == 0
    with (out / "metrics.csv").open() as f:
        row = next(csv.DictReader(f))
    expected = {
        "--single-model": {"gm_a"},
        "--no-balancer": {"gm_a", "gm_b", "md"},
        "--no-distillation": {"gm_a", "gm_b"},
    }
    assert {k for k in row if k in ("gm_a", "gm_b", "md")} == expected[switch]
    if switch == "--no-balancer":
        assert float(row["w_md"]) == 1.0 and float(row["w_gm_b"]) == 1.0
    assert (out / "balancer.png").exists() == (switch == "--no-distillation")


def test_missing_data_names_both_ways_to_get_it(example: ModuleType, tmp_path: Path, capsys) -> None:
    code = example.main([*TINY, "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--download" in err and "unpack.py" in err and "nowhere" in err


@pytest.mark.parametrize(
    "bad",
    [["--ipc", "3"], ["--iterations", "0"], ["--factor", "3"], ["--init", "noise"], ["--preset", "gpu"],
     ["--real-selection", "all"], ["--distance", "l1"], ["--model-steps", "-1"]],
)  # fmt: skip
def test_bad_arguments_exit_with_usage_error(example: ModuleType, bad: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        example.parse_config(bad)
    assert info.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_presets_fill_defaults_and_flags_override(example: ModuleType) -> None:
    paper = example.parse_config(["--preset", "paper"])
    assert (paper.ipc, paper.iterations, paper.inner_steps, paper.image_size_b, paper.patch_size_b) == (
        10, 100, 100, 224, 16,
    )  # fmt: skip
    assert example.parse_config(["--preset", "paper", "--ipc", "1"]).ipc == 1
    cpu = example.parse_config([])
    assert cpu.preset == "cpu" and cpu.ipc == 1 and cpu.image_size_b == 32 and cpu.device == "auto"


def test_nan_loss_stops_naming_loss_and_step_and_keeps_checkpoint(
    example: ModuleType, fake_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    args = [*TINY, "--data-root", str(fake_cifar), "--out", str(out), "--iterations", "3"]
    original = example.class_losses
    calls = {"n": 0}

    def poisoned(*a, **k):
        losses = original(*a, **k)
        calls["n"] += 1
        if calls["n"] > 2 * 2 + 2:  # iteration 1, step 1, class 0 (2 classes, 2 steps an iteration)
            losses[2] = losses[2] * float("nan")
        return losses

    monkeypatch.setattr(example, "class_losses", poisoned)
    with pytest.raises(SystemExit) as info:
        example.run(example.parse_config(args))
    message = str(info.value)
    assert "'md'" in message and "outer iteration 1, step 1" in message and "checkpoint" in message
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["iteration"] == 1 and checkpoint["step"] == 0
    assert torch.isfinite(checkpoint["synthetic"]).all()


def _wait_for_checkpoint(proc: subprocess.Popen, path: Path, iteration: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                if load_checkpoint(path)["iteration"] >= iteration:
                    return
            except (RuntimeError, EOFError, ValueError):
                pass  # caught between writes: try again
        if proc.poll() is not None:
            raise AssertionError(
                f"run ended before checkpoint {iteration}: {proc.stdout.read() if proc.stdout else ''}"
            )
        time.sleep(0.01)
    raise AssertionError("no checkpoint in time")


RESUMABLE = [*TINY, "--iterations", "3", "--init", "real"]


@pytest.fixture(scope="module")
def uninterrupted(fake_cifar: Path, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted run, started in the background, that the interrupted runs are compared against."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = run_subprocess([*RESUMABLE, "--data-root", str(fake_cifar), "--out", str(out)])
    yield proc, out
    if proc.poll() is None:
        proc.kill()


def _finished(proc: subprocess.Popen) -> None:
    assert proc.wait() == 0, proc.stdout.read() if proc.stdout else ""


def _assert_same_run(a: Path, b: Path) -> None:
    x, y = read_synthetic_set(a / "synthetic.pt"), read_synthetic_set(b / "synthetic.pt")
    assert x.iteration == y.iteration == 3
    assert torch.equal(x.images, y.images)  # bitwise: deterministic CPU mode, same thread count
    with (a / "metrics.csv").open() as f, (b / "metrics.csv").open() as g:
        rows_a, rows_b = list(csv.DictReader(f)), list(csv.DictReader(g))
    assert [r["global_step"] for r in rows_a] == [r["global_step"] for r in rows_b] == [str(i) for i in range(6)]
    assert [r["gm_a"] for r in rows_a] == [r["gm_a"] for r in rows_b]


def test_sigkill_then_resume_matches_uninterrupted_run(uninterrupted, fake_cifar: Path, tmp_path: Path) -> None:
    args = [*RESUMABLE, "--data-root", str(fake_cifar), "--out", str(tmp_path / "killed")]
    killed = run_subprocess(args)
    _wait_for_checkpoint(killed, tmp_path / "killed" / "checkpoint.pt", iteration=1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["iteration"] < 3
    _finished(run_subprocess([*args, "--resume"]))
    proc, out = uninterrupted
    _finished(proc)
    _assert_same_run(out, tmp_path / "killed")


def test_ctrl_c_checkpoints_mid_iteration_and_resume_matches(uninterrupted, fake_cifar: Path, tmp_path: Path) -> None:
    args = [*RESUMABLE, "--data-root", str(fake_cifar), "--out", str(tmp_path / "stopped")]
    stopped = run_subprocess(args)
    metrics = tmp_path / "stopped" / "metrics.csv"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2) and time.monotonic() < deadline:
        time.sleep(0.01)  # wait for the first image update
    stopped.send_signal(signal.SIGINT)
    _finished(stopped)
    saved = load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")
    assert saved["iteration"] * 2 + saved["step"] < 6, "the run should have stopped early"
    _finished(run_subprocess([*args, "--resume"]))
    proc, out = uninterrupted
    _finished(proc)
    _assert_same_run(out, tmp_path / "stopped")


def test_resume_refuses_changed_settings(example: ModuleType, fake_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = [*TINY, "--iterations", "1", "--inner-steps", "1", "--data-root", str(fake_cifar), "--out", str(out)]
    assert example.main(base) == 0
    with pytest.raises(SystemExit, match="lr_img"):
        example.run(example.parse_config([*base, "--resume", "--lr-img", "0.1"]))
    with pytest.raises(SystemExit, match="no checkpoint"):
        example.run(example.parse_config([*base, "--resume", "--out", str(tmp_path / "none")]))


def test_docs_preset_table_matches_the_presets(example: ModuleType) -> None:
    """The how-to's preset table is the documentation users read: it must state the presets' real values."""
    page = (REPO / "docs" / "howto" / "run-the-example.md").read_text()
    cpu, paper = example.parse_config([]), example.parse_config(["--preset", "paper"])
    rows = {
        "--iterations": (cpu.iterations, paper.iterations),
        "--inner-steps": (cpu.inner_steps, paper.inner_steps),
        "--ipc": (cpu.ipc, paper.ipc),
    }
    for flag, (a, b) in rows.items():
        line = next(row for row in page.splitlines() if row.startswith("|") and f"`{flag}`" in row)
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:] == [str(a), str(b)], line
    line = next(row for row in page.splitlines() if "`--model-steps`" in row)
    assert line.split("|")[2].strip() == f"{cpu.model_steps} / {cpu.projection_steps}"
    line = next(row for row in page.splitlines() if "`--batch-real`" in row)
    assert line.split("|")[2].strip() == f"{cpu.batch_real}, {cpu.batch_train}"
    line = next(row for row in page.splitlines() if "`--real-per-class`" in row)
    assert line.split("|")[2].strip() == str(cpu.real_per_class)

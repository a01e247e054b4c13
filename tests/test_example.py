"""The reference run, examples/hmdc_cifar10.py, at a tiny size on generated data, always as a separate process.

Where a test must look inside a run (a NaN injected, the models each outer iteration), a small driver process
wraps a library function and then runs the example as ``__main__`` (``runpy``), exactly as ``python`` does.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_drawn_from_half

from hmdc_modules.condensation import ConvNet, load_checkpoint, load_synthetic_set, read_synthetic_set

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "hmdc_cifar10.py"

TINY = [
    "--classes", "0,1", "--ipc", "1", "--factor", "2", "--iterations", "2", "--inner-steps", "2",
    "--model-steps", "1", "--projection-steps", "1", "--batch-real", "4", "--batch-train", "8",
    "--select-every", "1", "--balance-interval", "1", "--model-b", "test_vit", "--real-per-class", "0", "--quiet",
]  # fmt: skip
RESUMABLE = [*TINY, "--iterations", "3", "--init", "real"]


def env() -> dict[str, str]:  # two runs at once on two cores; never the network
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")


def start(args: list[str], driver: str | None = None) -> subprocess.Popen:
    """The example as its own process; with ``driver``, that code runs first in the process (it may wrap library
    functions), then the example runs as ``__main__``."""
    if driver is None:
        command = [sys.executable, str(EXAMPLE), *args]
    else:
        code = f"{textwrap.dedent(driver)}\nimport runpy, sys\nsys.argv = [{str(EXAMPLE)!r}, *sys.argv[1:]]\n"
        command = [sys.executable, "-c", code + f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')", *args]
    return subprocess.Popen(command, env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, code: int = 0, timeout: float = 600) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == code, f"exit {proc.returncode}\n{out}\n{err}"
    return out, err


def run(args: list[str], code: int = 0, driver: str | None = None) -> tuple[str, str]:
    return finish(start(args, driver), code)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


# ----------------------------------------------------------------------------------------------- a finished run


@pytest.fixture(scope="module")
def finished(fake_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    run([*TINY, "--init", "real", "--data-root", str(fake_cifar), "--out", str(out)])
    return out


def test_tiny_run_writes_every_artefact(finished: Path) -> None:
    artefacts = ("config.json", "synthetic.pt", "grid.png", "balancer.png", "losses.png", "metrics.csv")
    for name in (*artefacts, "checkpoint.pt", "checkpoint.prev.pt"):
        assert (finished / name).is_file(), name
    config = json.loads((finished / "config.json").read_text())
    assert config["ipc"] == 1 and config["model_b"] == "test_vit" and "out" not in config  # a path is no setting
    with (finished / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["global_step"] for r in rows] == ["0", "1", "2", "3"]  # 2 iterations x 2 image updates
    for key in ("gm_a", "gm_b", "md", "w_gm_a", "w_gm_b", "w_md", "model_loss", "projection_loss"):
        assert all(torch.isfinite(torch.tensor(float(r[key]))) for r in rows), key
    # balanced weights: the largest is exactly one in every class, so their class mean is at most one
    assert all(max(float(r["w_gm_a"]), float(r["w_gm_b"]), float(r["w_md"])) <= 1.0 + 1e-6 for r in rows)
    assert load_checkpoint(finished / "checkpoint.prev.pt")["iteration"] == 1  # the previous checkpoint is kept

    stored = read_synthetic_set(finished / "synthetic.pt")
    assert stored.iteration == 2 and stored.factor == 2 and stored.ipc == 1
    assert stored.images.shape == (2, 3, 32, 32) and stored.labels.tolist() == [0, 1]
    x, y = load_synthetic_set(finished / "synthetic.pt").tensors  # decoded: 4 images a stored one
    assert x.shape == (8, 3, 32, 32) and sorted(y.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    model = ConvNet(num_classes=10)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


def test_zero_iterations_write_the_initial_set_only(fake_cifar: Path, tmp_path: Path) -> None:
    """``--iterations 0`` writes the initial set with no update (the `init` arm); one update would move it."""
    out = tmp_path / "init"
    run([*TINY, "--init", "real", "--data-root", str(fake_cifar), "--out", str(out), "--iterations", "0"])
    start = torch.load(out / "synthetic.pt", weights_only=True)
    assert start["iteration"] == 0 and start["images"].shape[0] == 2  # 2 classes x IPC 1
    longer = tmp_path / "longer"
    run([*TINY, "--init", "real", "--data-root", str(fake_cifar), "--out", str(longer), "--iterations", "1",
         "--inner-steps", "1"])  # fmt: skip
    updated = torch.load(longer / "synthetic.pt", weights_only=True)
    assert not torch.equal(start["images"], updated["images"])  # one update moves the same start


def test_images_change_and_stay_in_pixel_range(finished: Path, tmp_path: Path) -> None:
    first = load_checkpoint(finished / "checkpoint.prev.pt")["synthetic"]  # after outer iteration 1
    last = read_synthetic_set(finished / "synthetic.pt").images
    assert not torch.equal(first.flatten(0, 1), last)  # image updates happened
    mean = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
    std = torch.tensor((0.2023, 0.1994, 0.2010)).view(1, 3, 1, 1)
    pixels = last * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_bf16_runs_end_to_end_and_keeps_float32_state(finished: Path, fake_cifar: Path, tmp_path: Path) -> None:
    """The finished run's settings under bf16 autocast: stored images, optimiser and balancer state stay float32;
    the arithmetic differs from fp32 (the images are not bitwise the fp32 run's) but the losses are finite."""
    out = tmp_path / "bf16"
    run([*TINY, "--init", "real", "--data-root", str(fake_cifar), "--out", str(out), "--precision", "bf16"])
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["synthetic"].dtype == torch.float32 and torch.isfinite(state["synthetic"]).all()
    assert state["balancer"]["accumulator"].dtype == torch.float32
    assert all(s["momentum_buffer"].dtype == torch.float32 for s in state["image_optimizer"]["state"].values())
    assert not torch.equal(state["synthetic"], load_checkpoint(finished / "checkpoint.pt")["synthetic"])
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(torch.isfinite(torch.tensor(float(r[k]))) for r in rows for k in ("gm_b", "md"))


def test_a_folder_holding_a_run_is_refused_and_left_byte_identical(finished: Path, fake_cifar: Path) -> None:
    before = snapshot(finished)
    _, err = run([*TINY, "--data-root", str(fake_cifar), "--out", str(finished), "--lr-img", "0.1"], code=2)
    assert error_lines(err) == [f"error: --out: {str(finished)!r} holds a run; continue it with --resume or replace "
                                "it with --overwrite"]  # fmt: skip
    _, err = run(["--resume", "--out", str(finished), "--lr-img", "0.1", "--ipc", "1"], code=2)
    (line,) = error_lines(err)  # a flag that contradicts the checkpoint: old and new values, each setting named
    assert "--lr-img (checkpoint: 0.005, given: 0.1)" in line and "--ipc" not in line
    assert snapshot(finished) == before


def test_a_damaged_checkpoint_gives_one_line(finished: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    (copy / "checkpoint.pt").write_bytes(os.urandom(300))  # garbage
    (copy / "checkpoint.prev.pt").write_bytes((copy / "synthetic.pt").read_bytes()[:100])  # truncated
    before = snapshot(copy)
    _, err = run(["--resume", "--out", str(copy)], code=2)
    (line,) = error_lines(err)
    assert "neither checkpoint is readable" in line and "checkpoint.prev.pt" in line and "Traceback" not in err
    assert "weights_only=False" not in err
    assert snapshot(copy) == before


@pytest.mark.parametrize("switch", ["--single-model", "--no-balancer", "--no-distillation"])
def test_ablation_switches_run(fake_cifar: Path, tmp_path: Path, switch: str) -> None:
    out = tmp_path / "run"
    run([*TINY, "--iterations", "1", "--inner-steps", "1", "--data-root", str(fake_cifar), "--out", str(out), switch])
    with (out / "metrics.csv").open() as f:
        row = next(csv.DictReader(f))
    expected = {"--single-model": {"gm_a"}, "--no-balancer": {"gm_a", "gm_b", "md"},
                "--no-distillation": {"gm_a", "gm_b"}}  # fmt: skip
    assert {k for k in row if k in ("gm_a", "gm_b", "md")} == expected[switch]
    if switch == "--no-balancer":
        assert float(row["w_md"]) == 1.0 and float(row["w_gm_b"]) == 1.0
    assert (out / "balancer.png").exists() == (switch == "--no-distillation")


# ---------------------------------------------------------------------------------------------------- bad input

BAD_FLAGS = [
    ["--ipc", "0"], ["--ipc", "abc"], ["--iterations", "-1"], ["--inner-steps", "-1"], ["--factor", "3"],
    ["--init", "noise"], ["--preset", "gpu"], ["--real-selection", "all"], ["--distance", "l1"],
    ["--model-steps", "-1"], ["--projection-steps", "-2"], ["--batch-real", "0"], ["--batch-train", "0"],
    ["--select-every", "0"], ["--balance-interval", "0"], ["--image-size-b", "4"], ["--patch-size-b", "-1"],
    ["--seed", "-1"], ["--real-per-class", "-5"], ["--lr-img", "0"], ["--lr-model-a", "-0.1"], ["--lr-model-b", "0"],
    ["--lr-projection", "nan"], ["--momentum-img", "1.5"], ["--weights-b", "no/such/file.pt"],
    ["--resume", "--overwrite"], ["--no-such-flag"],
    ["--model-b", "not_a_model"], ["--model-a", "nope"], ["--classes", "foo"], ["--classes", "0,0"],
    ["--classes", "12"], ["--device", "gpu0"], ["--model-b", "test_resnet"],  # a patch size for a CNN
    ["--resume"],  # no checkpoint in --out
    ["--precision", "fp16"], ["--precision", "tf32", "--device", "cpu"],  # tf32 is a CUDA setting
]  # fmt: skip


def test_every_bad_flag_gives_one_error_line_exit_2_and_writes_nothing(fake_cifar: Path, tmp_path: Path) -> None:
    """One driver process runs the example as ``__main__`` once per bad flag (one torch import for all)."""
    assert len({json.dumps(b) for b in BAD_FLAGS}) == len(BAD_FLAGS) >= 30
    driver = f"""
        import contextlib, io, json, runpy, sys
        results = []
        for i, bad in enumerate({BAD_FLAGS!r}):
            out = {str(tmp_path)!r} + f"/out{{i}}"
            sys.argv = [{str(EXAMPLE)!r}, *{TINY!r}, "--data-root", {str(fake_cifar)!r}, "--out", out, *bad]
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    runpy.run_path({str(EXAMPLE)!r}, run_name="__main__")
                    code = 0
                except SystemExit as stop:
                    code = stop.code
            results.append((bad, code, err.getvalue()))
        print(json.dumps(results))
        raise SystemExit(0)
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(driver)], env=env(), cwd=REPO, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for bad, code, err in json.loads(proc.stdout.splitlines()[-1]):
        assert code == 2, (bad, code, err)
        assert "Traceback" not in err, (bad, err)
        (line,) = error_lines(err)
        flag = bad[0] if bad != ["--model-b", "test_resnet"] else "--model-b"
        assert flag in line or (bad == ["--resume", "--overwrite"] and "--overwrite" in line), (bad, line)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a folder


def test_missing_data_says_how_to_get_it(tmp_path: Path) -> None:
    _, err = run([*TINY, "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")], code=2)
    (line,) = error_lines(err)
    assert "--download" in line and "nowhere" in line and "../shared" not in line
    assert not (tmp_path / "run").exists()


def test_paper_preset_offline_stops_at_once_with_one_line(fake_cifar: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    _, err = run(["--preset", "paper", "--data-root", str(fake_cifar), "--out", str(tmp_path / "run")], code=2)
    assert time.monotonic() - t0 < 60  # seconds: no download attempt, no data decoded first
    (line,) = error_lines(err)
    assert line.startswith("error: --pretrained-b augreg_in21k_ft_in1k:") and "--weights-b" in line
    assert "Traceback" not in err and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------- failures and resuming


def test_nan_loss_stops_naming_loss_and_step_and_keeps_checkpoint(fake_cifar: Path, tmp_path: Path) -> None:
    driver = """
        from hmdc_modules.objective import HMDCObjective
        original, calls = HMDCObjective.losses, [0]
        def poisoned(self, *args):
            losses = original(self, *args)
            calls[0] += 1
            if calls[0] > 2 * 2 + 2:  # outer iteration 1, step 1, class 0 (2 classes, 2 steps an iteration)
                losses[2] = losses[2] * float("nan")
            return losses
        HMDCObjective.losses = poisoned
    """
    out = tmp_path / "run"
    _, err = run([*TINY, "--iterations", "3", "--data-root", str(fake_cifar), "--out", str(out)], 1, driver)
    (line,) = error_lines(err)
    assert "'md'" in line and "outer iteration 1, step 1" in line and "checkpoint" in line
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["iteration"] == 1 and torch.isfinite(checkpoint["synthetic"]).all()


@pytest.fixture(scope="module")
def uninterrupted(fake_cifar: Path, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted run, started in the background, that the interrupted runs are compared against."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = start([*RESUMABLE, "--data-root", str(fake_cifar), "--out", str(out)])
    yield proc, out
    if proc.poll() is None:
        proc.kill()


def _wait_for_checkpoint(proc: subprocess.Popen, path: Path, iteration: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if load_checkpoint(path)["iteration"] >= iteration:
                return
        except (FileNotFoundError, ValueError):
            pass
        assert proc.poll() is None, "the run ended before the checkpoint"
        time.sleep(0.01)
    raise AssertionError("no checkpoint in time")


def _done(proc: subprocess.Popen) -> None:
    """Wait for the shared background run (several tests wait on it; its output is read once)."""
    if proc.returncode is None:
        finish(proc)
    assert proc.returncode == 0


def _assert_same_run(uninterrupted, other: Path) -> None:
    proc, out = uninterrupted
    _done(proc)
    x, y = read_synthetic_set(out / "synthetic.pt"), read_synthetic_set(other / "synthetic.pt")
    assert x.iteration == y.iteration == 3
    assert torch.equal(x.images, y.images)  # bitwise: deterministic CPU mode, same thread count
    with (out / "metrics.csv").open() as f, (other / "metrics.csv").open() as g:
        rows_a, rows_b = list(csv.DictReader(f)), list(csv.DictReader(g))
    for row in (*rows_a, *rows_b):
        assert float(row.pop("seconds")) > 0  # the one column that is not a function of the settings
    assert rows_a == rows_b and [r["global_step"] for r in rows_a] == [str(i) for i in range(6)]


def test_sigkill_then_resume_from_the_moved_folder_alone_matches(uninterrupted, fake_cifar, tmp_path) -> None:
    killed = start([*RESUMABLE, "--data-root", str(fake_cifar), "--out", str(tmp_path / "killed")])
    _wait_for_checkpoint(killed, tmp_path / "killed" / "checkpoint.pt", iteration=1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["iteration"] < 3
    (tmp_path / "killed").rename(tmp_path / "moved")  # the folder's path is not a setting
    run(["--resume", "--out", str(tmp_path / "moved"), "--data-root", str(fake_cifar)])  # no other flag
    _assert_same_run(uninterrupted, tmp_path / "moved")


def test_sigint_exits_130_and_resume_matches(uninterrupted, fake_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "stopped"
    stopped = start([*RESUMABLE, "--data-root", str(fake_cifar), "--out", str(out)])
    _wait_for_checkpoint(stopped, out / "checkpoint.pt", iteration=0)
    stopped.send_signal(signal.SIGINT)
    _, err = finish(stopped, code=130)
    assert f"interrupted (SIGINT); the last checkpoint is intact: continue with --resume --out {out}" in err
    assert "Traceback" not in err
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] < 3, "the run should have stopped early"
    run(["--resume", "--out", str(out), "--data-root", str(fake_cifar)])
    _assert_same_run(uninterrupted, out)


def test_resume_falls_back_to_the_previous_checkpoint(uninterrupted, fake_cifar: Path, tmp_path: Path) -> None:
    proc, finished_out = uninterrupted
    _done(proc)
    copy = tmp_path / "copy"
    shutil.copytree(finished_out, copy)
    data = (copy / "checkpoint.pt").read_bytes()
    (copy / "checkpoint.pt").write_bytes(data[: len(data) // 2])  # truncated: e.g. a full disk
    _, err = run(["--resume", "--out", str(copy), "--data-root", str(fake_cifar)])
    (line,) = [x for x in err.splitlines() if x.startswith("warning:")]
    assert "truncated" in line and "checkpoint.prev.pt" in line
    _assert_same_run(uninterrupted, copy)  # the last outer iteration was redone, bitwise the same


# ------------------------------------------------------------------------------- pretrained B, reference-exact

RECORDER = """
    import json, torch
    from hmdc_modules import condensation
    from hmdc_modules.objective import HMDCObjective
    created, init = condensation.create_model, HMDCObjective.__init__
    def create_model(name, num_classes, **kwargs):
        model = created(name, num_classes, **kwargs)
        state = model.state_dict()
        record = {"name": name, "weights": str(kwargs.get("weights")), "head": float(state["head.weight"].sum())
                  if "head.weight" in state else None, "qkv": float(state["blocks.0.attn.qkv.weight"].sum())
                  if "blocks.0.attn.qkv.weight" in state else None}
        with open(LOG, "a") as f:
            f.write(json.dumps({"model": record}) + "\\n")
        return model
    def objective_init(self, adapters, **kwargs):
        init(self, adapters, **kwargs)
        balancer = kwargs.get("balancer")
        with open(LOG, "a") as f:
            f.write(json.dumps({"taps": [list(a.layer_names) for a in adapters],
                                "init_value": None if balancer is None else balancer.init_value}) + "\\n")
    condensation.create_model, HMDCObjective.__init__ = create_model, objective_init
"""


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_vit_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import timm

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "tiny_vit.pt"
    torch.save(timm.create_model("test_vit", num_classes=7, img_size=32, patch_size=4).state_dict(), path)
    return path


def test_weights_b_reloads_model_b_with_a_new_head_every_outer_iteration(fake_cifar, tmp_path, tiny_vit_weights):
    log = tmp_path / "log.jsonl"
    args = [*TINY, "--inner-steps", "1", "--weights-b", str(tiny_vit_weights), "--data-root", str(fake_cifar)]
    run([*args, "--out", str(tmp_path / "run")], driver=f"LOG = {str(log)!r}\n" + textwrap.dedent(RECORDER))
    models = [r["model"] for r in _records(log) if "model" in r and r["model"]["name"] == "test_vit"]
    assert len(models) == 3  # the settings check, then outer iterations 0 and 1
    expected = float(torch.load(tiny_vit_weights)["blocks.0.attn.qkv.weight"].sum())
    assert all(m["weights"] == str(tiny_vit_weights) and m["qkv"] == expected for m in models)  # reloaded each time
    heads = [m["head"] for m in models[1:]]
    assert heads[0] != heads[1]  # a new random head every outer iteration


def test_reference_exact_and_the_paper_preset_tap_the_convnet_twice(fake_cifar, tmp_path, tiny_vit_weights):
    """--preset paper (its hub weights replaced by a local file, its sizes by tiny ones) turns on reference-exact:
    the ConvNet's deepest map is tapped twice and the balancer starts at 1e-6; the default taps it once, from 0."""
    small = ["--ipc", "1", "--iterations", "1", "--inner-steps", "1", "--model-steps", "1", "--projection-steps", "1",
             "--batch-real", "4", "--batch-train", "8", "--image-size-b", "32", "--patch-size-b", "4",
             "--real-per-class", "0", "--classes", "0,1", "--model-b", "test_vit", "--quiet"]  # fmt: skip
    for name, extra in (("paper", ["--preset", "paper", "--weights-b", str(tiny_vit_weights)]), ("default", [])):
        log = tmp_path / f"{name}.jsonl"
        out = tmp_path / name
        driver = f"LOG = {str(log)!r}\n" + textwrap.dedent(RECORDER)
        run([*small, *extra, "--data-root", str(fake_cifar), "--out", str(out)], driver=driver)
        objective = [r for r in _records(log) if "taps" in r][-1]
        convnet_taps = objective["taps"][0]
        if name == "paper":
            assert convnet_taps == ["features.0.pool", "features.1.pool", "features.2.pool", "features.2"]
            assert objective["init_value"] == 1e-6
            assert json.loads((out / "config.json").read_text())["reference_exact"] is True
        else:
            assert convnet_taps == ["features.0.pool", "features.1.pool", "features.2.pool"]
            assert objective["init_value"] == 0.0


def test_docs_preset_table_matches_the_presets() -> None:
    """The how-to's preset table is what users read: it must state the presets' real values (from --help)."""
    page = (REPO / "docs" / "howto" / "run-the-example.md").read_text()

    def defaults(*argv: str) -> dict[str, str]:
        text = subprocess.run([sys.executable, str(EXAMPLE), *argv, "--help"], env=env(), capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
        flat = " ".join(text.split("options:", 1)[1].split())
        return {flag: flat.split(flag + " ", 1)[1].split("(default: ", 1)[1].split(")", 1)[0]
                for flag in ("--iterations", "--inner-steps", "--ipc", "--model-steps", "--projection-steps",
                             "--batch-real", "--batch-train", "--real-per-class")}  # fmt: skip

    cpu, paper = defaults(), defaults("--preset", "paper")
    for flag in ("--iterations", "--inner-steps", "--ipc"):
        line = next(row for row in page.splitlines() if row.startswith("|") and f"`{flag}`" in row)
        assert [c.strip() for c in line.strip("|").split("|")][1:] == [cpu[flag], paper[flag]], line
    line = next(row for row in page.splitlines() if "`--model-steps`" in row)
    assert line.split("|")[2].strip() == f"{cpu['--model-steps']} / {cpu['--projection-steps']}"
    line = next(row for row in page.splitlines() if "`--batch-real`" in row)
    assert line.split("|")[2].strip() == f"{cpu['--batch-real']}, {cpu['--batch-train']}"
    line = next(row for row in page.splitlines() if "`--real-per-class`" in row)
    assert line.split("|")[2].strip() == cpu["--real-per-class"]


def test_real_subset_condenses_from_that_half_only(fake_cifar: Path, tmp_path: Path) -> None:
    """``--real-subset C`` (protocol v2) starts from images of the C half, never of P."""
    out = tmp_path / "c"
    run([*TINY, "--init", "real", "--factor", "1", "--ipc", "3", "--real-subset", "C", "--iterations", "0",
         "--data-root", str(fake_cifar), "--out", str(out)])  # fmt: skip
    assert_drawn_from_half(read_synthetic_set(out / "synthetic.pt").images, fake_cifar, "C")


def test_protocol_v2_round_trip_pretrain_condense_from_c_evaluate_ft(fake_cifar: Path, tmp_path: Path) -> None:
    """Protocol v2 end to end at a tiny size: pretrain on P, write weights.pt; the example condenses from C with
    model B reloaded from that file (--weights-b); the evaluation fine-tunes an entry with those weights (_ft)."""
    from hmdc_modules.condensation.models import create_model, read_weights_info
    from hmdc_modules.evaluation.cli import main as evaluate
    from hmdc_modules.pretrain import main as pretrain

    weights = tmp_path / "pretrain" / "weights.pt"
    assert pretrain(["--data", str(fake_cifar), "--subset", "P", "--model", "test_vit", "--image-size", "32",
                     "--patch-size", "4", "--batch-size", "8", "--epochs", "1", "--threads", "1", "--no-progress",
                     "--out", str(weights.parent)]) == 0  # fmt: skip
    info = read_weights_info(weights)
    assert info is not None and (info.model, info.image_size, info.patch_size) == ("test_vit", 32, 4)
    backbone = torch.load(weights, weights_only=True)["state_dict"]["blocks.0.attn.qkv.weight"]
    assert torch.equal(create_model("test_vit", 10, weights=weights).blocks[0].attn.qkv.weight.detach(), backbone)

    out = tmp_path / "set"
    run([*TINY, "--iterations", "1", "--real-subset", "C", "--weights-b", str(weights), "--patch-size-b", "4",
         "--data-root", str(fake_cifar), "--out", str(out)])  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["weights_b"] == str(weights) and config["real_subset"] == "C"

    report = tmp_path / "eval"
    argv = [str(out), "--name", "v2", "--models", f"convnet,test_vit@weights={weights}", "--patch-size", "4",
            "--convnet-width", "8", "--epochs", "1", "--eval-every", "0", "--seeds", "1",
            "--data-root", str(fake_cifar), "--out", str(report), "--device", "cpu", "--quiet"]  # fmt: skip
    assert evaluate(argv) == 0
    cells = {c["model"]["label"]: c for c in json.loads((report / "results.json").read_text())["cells"]}
    assert set(cells) == {"convnet", "test_vit_ft"}
    assert cells["test_vit_ft"]["model"]["weights"] == str(weights)

"""``--precision`` in the evaluation: bf16 autocast changes the arithmetic of the training and test forward passes and
nothing else (parameters, optimiser state and images stay float32); the precision is recorded and a folder never
mixes cells of two precisions. Tiny models on generated data (``fake_cifar``: 2 classes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import hmdc_modules.evaluation.train as training
from hmdc_modules.evaluate import main
from hmdc_modules.evaluation import (
    Cell,
    CellResult,
    EvalSettings,
    ModelSpec,
    SetSpec,
    evaluate_accuracy,
    load_results,
    run_cell,
    run_suite,
)
from hmdc_modules.evaluation.augmentation import build_optimizer
from hmdc_modules.evaluation.train import _train_epoch

TINY_CNN = ModelSpec("convnet", width=8)
MODELS = [TINY_CNN, ModelSpec("test_resnet"), ModelSpec("test_vit")]  # instance norm, BatchNorm, attention
TINY_CLI = ["--models", "convnet", "--convnet-width", "8", "--epochs", "1", "--eval-every", "0", "--seeds", "1"]


def tiny_settings(root: Path, **changes: object) -> EvalSettings:
    values: dict[str, object] = {"epochs": 1, "eval_every": 0, "batch_size": 8, "data_root": str(root)}
    values.update(changes)
    return EvalSettings(**values)  # type: ignore[arg-type]


def record_dtypes(model: nn.Module) -> list[torch.dtype]:
    """The output dtypes of the model's Linear and Conv2d layers, appended at every forward pass."""
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            module.register_forward_hook(lambda _m, _i, output: seen.append(output.dtype))
    return seen


def float32_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Whether every parameter, gradient, buffer and optimiser-state tensor is float32 (integer counters aside)."""
    tensors = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None)]
    tensors += [b for b in model.buffers() if b.is_floating_point()]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return bool(tensors) and all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())


# ----------------------------------------------------------------------------------------------------------------
# The settings
# ----------------------------------------------------------------------------------------------------------------


def test_settings_round_trip_and_old_records_read_as_fp32() -> None:
    bf16 = EvalSettings(epochs=3, precision="bf16")
    assert bf16.to_dict()["precision"] == "bf16" and EvalSettings.from_dict(bf16.to_dict()) == bf16
    assert EvalSettings().precision == "fp32"
    old = EvalSettings(epochs=3).to_dict()
    del old["precision"]  # settings written before the field existed
    assert EvalSettings.from_dict(old) == EvalSettings(epochs=3) and EvalSettings.from_dict(old).precision == "fp32"
    assert bf16.differences(EvalSettings.from_dict(old)) == {"precision": ("fp32", "bf16")}
    assert EvalSettings(epochs=3).differences(EvalSettings.from_dict(old)) == {}


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("fp16", ValueError, "`precision` must be one of 'fp32', 'bf16', 'tf32', got 'fp16'"),
        ("BF16", ValueError, "`precision` must be one of 'fp32', 'bf16', 'tf32', got 'BF16'"),
        (16, TypeError, "`precision` must be a string, one of 'fp32', 'bf16', 'tf32', got 16"),
    ],
)
def test_a_bad_precision_is_refused_in_one_line(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        EvalSettings(precision=value)  # type: ignore[arg-type]
    assert str(info.value) == message
    with pytest.raises(error, match="`precision`"):
        EvalSettings.from_dict({**EvalSettings().to_dict(), "precision": value})


# ----------------------------------------------------------------------------------------------------------------
# Training and testing
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s.name)
def test_train_epoch_computes_in_bfloat16_and_keeps_the_state_float32(spec: ModelSpec) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 32, 32, generator=generator)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        model = spec.build(num_classes=10)
        optimizer = build_optimizer(model.parameters(), 0.01, momentum=0.9, weight_decay=5e-4)
        seen = record_dtypes(model)
        autocast_in_backward: list[bool] = []

        def note_autocast(grad: torch.Tensor, noted: list[bool] = autocast_in_backward) -> None:
            noted.append(torch.is_autocast_enabled("cpu"))

        for p in model.parameters():  # the engine runs the hooks under the thread state .backward() was called in
            p.register_hook(note_autocast)
        before = images.clone()
        settings = EvalSettings(batch_size=3, precision=precision, augment="none", cutmix_p=0.0)
        loss = _train_epoch(
            model,
            optimizer,
            images,
            labels,
            settings=settings,
            image_size=spec.image_size,
            augment=None,
            use_cutmix=False,
            order=torch.Generator().manual_seed(0),
            draws=torch.Generator().manual_seed(1),
        )
        assert seen and set(seen) == {dtype}, (precision, set(seen))
        assert autocast_in_backward and not any(autocast_in_backward)  # the backward pass ran outside autocast
        assert not torch.is_autocast_enabled("cpu")  # and the context is left
        assert torch.isfinite(torch.tensor(loss))
        assert float32_state(model, optimizer) and len(optimizer.state) == len(list(model.parameters()))
        assert images.dtype == torch.float32 and torch.equal(images, before)


def test_evaluate_accuracy_tests_in_the_precision_asked_for() -> None:
    model = TINY_CNN.build(num_classes=2)
    images, labels = torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 0, 1, 0])
    seen = record_dtypes(model)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        seen.clear()
        accuracy = evaluate_accuracy(model, images, labels, batch_size=2, precision=precision)
        assert 0.0 <= accuracy <= 100.0 and seen and set(seen) == {dtype}
        assert model.training and all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ValueError, match=r"^`precision` must be one of 'fp32', 'bf16', 'tf32', got 'half'$"):
        evaluate_accuracy(model, images, labels, precision="half")


def test_a_bf16_cell_runs_end_to_end_and_records_its_precision(
    random_set: Path, fake_cifar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    optimizers: list[torch.optim.Optimizer] = []
    real_build_optimizer = training.build_optimizer

    def capturing(*args: object, **kwargs: object) -> torch.optim.Optimizer:
        optimizers.append(real_build_optimizer(*args, **kwargs))  # type: ignore[arg-type]
        return optimizers[-1]

    monkeypatch.setattr(training, "build_optimizer", capturing)
    cell = Cell(SetSpec.from_path(random_set), ModelSpec("test_resnet"), seed=0)
    result = run_cell(cell, tiny_settings(fake_cifar, epochs=2, eval_every=1, precision="bf16"))
    assert result.settings["precision"] == "bf16" and CellResult.from_dict(result.to_dict()) == result
    assert len(result.history) == 2 and all(0.0 <= a <= 100.0 for _, a in result.history)
    assert torch.isfinite(torch.tensor(result.final_loss))
    (optimizer,) = optimizers  # the model's parameters are the optimiser's: both stayed float32
    params = [p for group in optimizer.param_groups for p in group["params"]]
    states = [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    assert params and states and all(t.dtype == torch.float32 for t in [*params, *states] if t.is_floating_point())


def test_tf32_on_a_cpu_is_refused_before_anything_runs(
    random_set: Path, fake_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = r"^`precision` 'tf32' needs a CUDA device, got 'cpu' \(use 'fp32' or 'bf16'\)$"
    monkeypatch.setattr(training, "read_set", lambda *args, **kwargs: pytest.fail("read before the check"))
    cell = Cell(SetSpec.from_path(random_set), TINY_CNN, seed=0)
    with pytest.raises(ValueError, match=message):
        run_cell(cell, tiny_settings(fake_cifar, precision="tf32"), device="cpu")
    monkeypatch.undo()
    out = tmp_path / "eval"
    with pytest.raises(ValueError, match=message):
        run_suite([random_set], [TINY_CNN], [0], tiny_settings(fake_cifar, precision="tf32"), out, device="cpu")
    assert not out.exists()  # nothing written


# ----------------------------------------------------------------------------------------------------------------
# Reuse of finished cells, and the reports
# ----------------------------------------------------------------------------------------------------------------


def strip_precision(out: Path) -> None:
    """Make the folder look written before ``precision`` existed: no such key in settings.json or the records."""
    for path in [out / "settings.json", *(out / "cells").glob("*.json")]:
        data = json.loads(path.read_text())
        (data.get("settings", data)).pop("precision")
        path.write_text(json.dumps(data))


def test_a_folder_never_mixes_precisions(random_set: Path, fake_cifar: Path, tmp_path: Path) -> None:
    fp32, bf16 = tiny_settings(fake_cifar), tiny_settings(fake_cifar, precision="bf16")

    def suite(settings: EvalSettings, out: Path) -> object:
        return run_suite([random_set], [TINY_CNN], [0], settings, out, device="cpu", progress=False, log=print)

    first, second = tmp_path / "fp32", tmp_path / "bf16"
    assert suite(fp32, first).trained == 1  # type: ignore[attr-defined]
    assert "precision" not in (first / "results.md").read_text()  # fp32 says nothing new
    with pytest.raises(ValueError, match=r"other settings \(precision: 'fp32' -> 'bf16'\)"):
        suite(bf16, first)
    assert suite(bf16, second).trained == 1  # type: ignore[attr-defined]
    assert load_results(second)[0].settings["precision"] == "bf16"
    assert "precision bf16: forward passes under bfloat16 autocast" in (second / "results.md").read_text()
    assert json.loads((second / "results.json").read_text())["settings"]["precision"] == "bf16"
    with pytest.raises(ValueError, match=r"other settings \(precision: 'bf16' -> 'fp32'\)"):
        suite(fp32, second)

    # without settings.json, each record answers for its own precision
    (second / "settings.json").unlink()
    with pytest.raises(ValueError, match=r"was computed with other settings \(precision: 'bf16' -> 'fp32'\)"):
        suite(fp32, second)

    # a folder written before the field existed is fp32: reused for fp32, refused for bf16
    strip_precision(first)
    report = suite(fp32, first)
    assert (report.trained, report.skipped) == (0, 1)  # type: ignore[attr-defined]
    (first / "settings.json").unlink()
    with pytest.raises(ValueError, match=r"was computed with other settings \(precision: 'fp32' -> 'bf16'\)"):
        suite(bf16, first)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def test_command_line_records_the_precision(
    random_set: Path, fake_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    argv = [str(random_set), *TINY_CLI, "--data-root", str(fake_cifar), "--device", "cpu", "--quiet"]
    assert main([*argv, "--out", str(out), "--precision", "bf16"]) == 0
    assert "1 cells trained" in capsys.readouterr().out
    assert json.loads((out / "settings.json").read_text())["precision"] == "bf16"
    assert [r.settings["precision"] for r in load_results(out)] == ["bf16"]
    assert "precision bf16" in (out / "results.md").read_text()

    with pytest.raises(SystemExit) as info:  # the default is fp32: the folder's bf16 cells are not reused
        main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "precision: 'bf16' -> 'fp32'" in err

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "--precision {fp32,bf16,tf32}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fp16", "argument --precision: invalid choice: 'fp16' (choose from"),
        ("tf32", "`precision` 'tf32' needs a CUDA device, got 'cpu' (use 'fp32' or 'bf16')"),
    ],
)
def test_command_line_refuses_a_bad_precision_in_one_line(
    value: str, message: str, random_set: Path, fake_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    argv = [str(random_set), *TINY_CLI, "--data-root", str(fake_cifar), "--device", "cpu", "--quiet"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(out), "--precision", value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0] == err.splitlines()[-1] and message in errors[0], err
    assert not out.exists()  # nothing written

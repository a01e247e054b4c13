"""Tests for ``python -m hmdc_modules.pretrain`` on tiny synthetic image folders (no network, seconds each)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hmdc_modules.pretrain as pretrain_module
from hmdc_modules.condensation import CIFAR10_CLASSES
from hmdc_modules.condensation.models import create_model, head_parameter_names, read_weights_info
from hmdc_modules.pretrain import main, parse_args

_VIT = ["--model", "test_vit", "--image-size", "16", "--patch-size", "4", "--batch-size", "8", "--no-progress"]


def _folder(root: Path, classes: tuple[str, ...], train: int, test: int, side: int) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (side, side, 3), dtype=np.uint8)
                pixels[..., index % 3] += 150  # colour tells the class
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    return _folder(tmp_path / "colours", ("blue", "green", "red"), train=8, test=3, side=20)


def _run(data: Path, out: Path, *extra: str) -> int:
    return main(["--data", str(data), "--out", str(out), "--threads", "1", *_VIT, *extra])


def test_round_trip_pretrain_then_create_model_with_a_fresh_head(colours: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run(colours, out, "--epochs", "1") == 0
    weights = out / "weights.pt"
    info = read_weights_info(weights)
    assert info is not None
    assert (info.model, info.num_classes, info.image_size, info.patch_size) == ("test_vit", 3, 16, 4)
    assert info.classes == ("blue", "green", "red")
    assert info.extra["epochs"] == 1 and 0.0 <= info.extra["test_accuracy"] <= 1.0
    saved = torch.load(weights, weights_only=True)["state_dict"]
    for num_classes in (3, 7):
        model = create_model("test_vit", num_classes, weights=weights)
        head = set(head_parameter_names(model))
        assert head == {"head.weight", "head.bias"}
        for name, tensor in model.state_dict().items():
            if name not in head:
                assert torch.equal(tensor, saved[name]), name
        assert model.head.weight.shape == (num_classes, saved["head.weight"].shape[1])
        if num_classes == 3:
            assert not torch.equal(model.head.weight, saved["head.weight"])
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [row["epoch"] for row in rows] == ["1"] and 0.0 <= float(rows[0]["test_accuracy"]) <= 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["epochs"]) == 1
    assert json.loads((out / "config.json").read_text())["model"] == "test_vit"


def test_a_finished_run_is_refused_unless_overwrite(
    colours: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert _run(colours, out, "--epochs", "1") == 0
    before = (out / "weights.pt").read_bytes()
    capsys.readouterr()
    assert _run(colours, out, "--epochs", "1") == 2
    error = capsys.readouterr().err
    assert "holds a finished run (weights.pt); pass --overwrite" in error and error.count("\n") == 1
    assert _run(colours, out, "--epochs", "1", "--resume") == 2
    assert (out / "weights.pt").read_bytes() == before
    assert _run(colours, out, "--epochs", "1", "--seed", "3", "--overwrite") == 0
    assert (out / "weights.pt").read_bytes() != before
    assert json.loads((out / "config.json").read_text())["seed"] == 3


def test_an_interrupted_run_resumes_to_the_same_weights(
    colours: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("--epochs", "2", "--checkpoint-every", "2")
    assert _run(colours, tmp_path / "straight", *args) == 0

    real_augment = pretrain_module._augment
    calls = {"n": 0}

    def interrupted(images, generator):
        calls["n"] += 1
        if calls["n"] == 5:  # 3 steps an epoch: interrupt in epoch 2, after the checkpoint at step 4
            raise KeyboardInterrupt
        return real_augment(images, generator)

    monkeypatch.setattr(pretrain_module, "_augment", interrupted)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        _run(colours, out, *args)
    assert (out / "checkpoint.pt").is_file() and not (out / "weights.pt").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 4
    assert _run(colours, out, *args) == 2  # an unfinished run needs --resume
    assert _run(colours, out, "--epochs", "3", "--checkpoint-every", "2", "--resume") == 2  # settings differ
    monkeypatch.setattr(pretrain_module, "_augment", real_augment)
    assert _run(colours, out, *args, "--resume") == 0
    straight = torch.load(tmp_path / "straight" / "weights.pt", weights_only=True)["state_dict"]
    resumed = torch.load(out / "weights.pt", weights_only=True)["state_dict"]
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
    assert [row["epoch"] for row in csv.DictReader((out / "log.csv").open())] == ["1", "2"]


def test_a_run_stopped_before_its_first_checkpoint_starts_afresh(colours: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what a run killed while loading its data leaves
    assert _run(colours, out, "--epochs", "1", "--resume") == 2  # nothing to resume
    assert _run(colours, out, "--epochs", "1") == 0
    assert json.loads((out / "config.json").read_text())["model"] == "test_vit"


def test_subset_p_of_a_cifar10_tree_trains_on_half_of_each_class(tmp_path: Path) -> None:
    data = _folder(tmp_path / "cifar", CIFAR10_CLASSES, train=4, test=1, side=32)
    out = tmp_path / "run"
    assert _run(data, out, "--epochs", "1", "--subset", "P") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "CIFAR-10, subset P: 20 training and 10 test images"
    assert int(next(csv.DictReader((out / "log.csv").open()))["train_images"]) == 20


def test_a_folder_without_test_split_holds_out_a_stratified_share(tmp_path: Path) -> None:
    data = _folder(tmp_path / "f", ("a", "b"), train=10, test=0, side=16)
    for folder in (data / "test").iterdir():
        folder.rmdir()
    (data / "test").rmdir()
    out = tmp_path / "run"
    assert _run(data, out, "--epochs", "1", "--test-fraction", "0.2") == 0
    assert json.loads((out / "metrics.json").read_text())["data"].endswith("16 training and 4 test images")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "no_such_model"], "`--model` must be 'convnet' or a timm model name, got 'no_such_model'"),
        (["--data", "/nonexistent/folder"], "`--data`: no folder '/nonexistent/folder'"),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "nonsense"], "`--device`"),
        (["--patch-size", "5"], "`image_size` 16 must be divisible by the patch size 5 of 'test_vit'"),
        (["--resume"], "holds no run to resume"),
        (
            ["--precision", "tf32"] if not torch.cuda.is_available() else ["--precision", "tf32", "--device", "cpu"],
            "`--precision` 'tf32' needs a CUDA device, got 'cpu'",
        ),
    ],
)
def test_bad_settings_fail_before_anything_is_written(
    extra: list[str], message: str, colours: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["--data", str(colours), "--out", str(out), "--epochs", "1", *_VIT, *extra]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("pretrain: error: ") and message in error and error.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "expected an integer >= 1, got 0"),
        (["--subset", "D"], "invalid choice: 'D'"),
        (["--lr", "-1"], "expected a finite number >= 0"),
        (["--test-fraction", "1"], "strictly between 0 and 1"),
        (["--resume", "--overwrite"], "not allowed with argument"),
        (["--precision", "fp16"], "invalid choice: 'fp16'"),
    ],
)
def test_flag_errors_name_the_flag(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(["--model", "convnet", "--data", "d", "--out", "o", *argv])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_bf16_trains_under_autocast_and_keeps_float32_weights(
    colours: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[torch.dtype] = []
    real_cross_entropy = pretrain_module.F.cross_entropy

    def spy(logits, *args, **kwargs):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return real_cross_entropy(logits, *args, **kwargs)

    monkeypatch.setattr(pretrain_module.F, "cross_entropy", spy)
    assert _run(colours, tmp_path / "bf16", "--epochs", "1", "--precision", "bf16") == 0
    assert seen and set(seen) == {torch.bfloat16}  # every training and test loss was computed under bf16 autocast
    seen.clear()
    assert _run(colours, tmp_path / "fp32", "--epochs", "1") == 0
    assert set(seen) == {torch.float32}
    bf16 = torch.load(tmp_path / "bf16" / "weights.pt", weights_only=True)["state_dict"]
    fp32 = torch.load(tmp_path / "fp32" / "weights.pt", weights_only=True)["state_dict"]
    assert all(t.dtype == torch.float32 for t in bf16.values() if t.is_floating_point())
    assert any(not torch.equal(bf16[k], fp32[k]) for k in fp32)  # the arithmetic changed, the format did not
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["precision"] == "bf16"


def test_a_run_recorded_before_precision_existed_resumes_as_fp32(colours: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ("--epochs", "2", "--checkpoint-every", "2")
    assert _run(colours, out, *args) == 0
    (out / "weights.pt").unlink()  # unfinished again: the last checkpoint stands
    config = json.loads((out / "config.json").read_text())
    del config["precision"]
    (out / "config.json").write_text(json.dumps(config))
    assert _run(colours, out, *args, "--resume", "--precision", "bf16") == 2  # another precision is refused
    assert _run(colours, out, *args, "--resume") == 0

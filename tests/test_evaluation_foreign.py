"""Sets saved by other tools: each format built from tiny tensors here, read back, checked and trained on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hmdc_modules.condensation import CIFAR10_MEAN, CIFAR10_STD, save_synthetic_set
from hmdc_modules.evaluate import main
from hmdc_modules.evaluation import Cell, ModelSpec, SetSpec, read_set, run_cell
from hmdc_modules.evaluation.foreign import (
    NORMALIZATIONS,
    ForeignSetError,
    SetSource,
    detect_set_format,
    resolve_normalization,
)
from hmdc_modules.evaluation.protocols import protocol_settings

DC_MEAN, DC_STD = NORMALIZATIONS["dc"]


def images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_library_set_is_detected_and_keeps_its_normalisation(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.pt"
    save_synthetic_set(
        path, images(2), torch.tensor([0, 1]), mean=(0.1, 0.2, 0.3), std=(1, 2, 3), factor=1, ipc=1, iteration=0
    )
    stored, sha = read_set(path)
    assert detect_set_format(path) == "hmdc" and len(sha) == 64
    assert stored.mean == pytest.approx((0.1, 0.2, 0.3)) and stored.std == pytest.approx((1.0, 2.0, 3.0))


def test_hmdc_reference_file(tmp_path: Path) -> None:
    path = tmp_path / "synthetic_images.pth"
    torch.save({"synthetic_images": images(6).view(2, 3, 3, 32, 32), "factor": 2, "n_ipc": 3, "iteration": 7}, path)
    stored, _ = read_set(path)
    assert detect_set_format(path) == "hmdc-reference"
    assert stored.images.shape == (6, 3, 32, 32) and stored.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert stored.factor == 2 and stored.mean == CIFAR10_MEAN and stored.std == CIFAR10_STD
    assert SetSpec.from_path(tmp_path).name == tmp_path.name  # a folder holding synthetic_images.pth


def test_dc_res_file_picks_an_experiment_and_uses_dc_normalisation(tmp_path: Path) -> None:
    path = tmp_path / "res_DM_CIFAR10_ConvNet_1ipc.pt"
    first, second = images(3, seed=1), images(3, seed=2)
    labels = torch.tensor([0, 1, 2])
    torch.save({"data": [[first, labels], [second, labels]], "accs_all_exps": {"ConvNet": [0.3]}}, path)
    stored, _ = read_set(path)
    assert detect_set_format(path) == "dc"
    assert torch.equal(stored.images, first) and stored.labels.tolist() == [0, 1, 2]
    assert (stored.mean, stored.std) == (DC_MEAN, DC_STD) and stored.extra["source"]["entries"] == 2
    picked, _ = read_set(path, SetSource(entry=1))
    assert torch.equal(picked.images, second)
    with pytest.raises(ForeignSetError, match="experiment 5 is not an"):
        read_set(path, SetSource(entry=5))


def test_mtt_folder_with_soft_labels_and_learned_lr(tmp_path: Path) -> None:
    torch.save(images(4), tmp_path / "images_best.pt")
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(3))
    torch.save(logits, tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.0123), tmp_path / "lr_best.pt")
    spec = SetSpec.from_path(tmp_path, source=SetSource(normalization="dc", soft_labels="logits"))
    assert spec.path.endswith("images_best.pt") and spec.name == tmp_path.name
    stored, _ = read_set(spec.path, spec.source)
    assert detect_set_format(spec.path) == "mtt"
    probabilities = logits.softmax(1)
    assert torch.allclose(stored.extra["soft_labels"], probabilities)
    assert stored.labels.tolist() == probabilities.argmax(1).tolist()
    assert stored.extra["learned_lr"] == pytest.approx(0.0123) and stored.mean == DC_MEAN
    # logits are not taken for probabilities unless said
    with pytest.raises(ForeignSetError, match=r"not probabilities.*--soft-labels logits"):
        read_set(spec.path, SetSource(normalization="dc"))
    # the normalisation is never guessed
    with pytest.raises(ForeignSetError, match=r"does not record how its images are normalised.*--set-normalization"):
        read_set(spec.path)


def test_mtt_hard_labels(tmp_path: Path) -> None:
    torch.save(images(4), tmp_path / "images_3000.pt")
    torch.save(torch.tensor([0, 0, 1, 1]), tmp_path / "labels_3000.pt")
    stored, _ = read_set(tmp_path / "images_3000.pt", SetSource(normalization="none"))
    assert stored.labels.tolist() == [0, 0, 1, 1] and "soft_labels" not in stored.extra
    assert stored.mean == (0.0, 0.0, 0.0) and stored.std == (1.0, 1.0, 1.0) and stored.ipc == 2


def test_idc_data_pt_needs_normalisation_and_factor(tmp_path: Path) -> None:
    path = tmp_path / "data.pt"
    torch.save([images(2), torch.tensor([0, 1])], path)
    assert detect_set_format(path) == "idc"
    with pytest.raises(ForeignSetError, match="--set-factor"):
        read_set(path, SetSource(normalization="dc"))
    stored, _ = read_set(path, SetSource(normalization="dc", factor=2))
    assert stored.factor == 2 and stored.images.shape == (2, 3, 32, 32) and stored.labels.tolist() == [0, 1]


def test_bare_tensor_with_a_labels_file_and_dicts(tmp_path: Path) -> None:
    torch.save(images(3), tmp_path / "x.pt")
    torch.save(torch.tensor([2.0, 0.0, 1.0]), tmp_path / "y.pt")  # integral floats are class indices
    with pytest.raises(ForeignSetError, match="no known format"):
        read_set(tmp_path / "x.pt")  # a bare tensor is never detected: it must be named
    with pytest.raises(ForeignSetError, match="--set-labels"):
        read_set(tmp_path / "x.pt", SetSource("tensor", normalization="dc"))
    stored, sha = read_set(tmp_path / "x.pt", SetSource("tensor", normalization="dc", labels=tmp_path / "y.pt"))
    assert stored.labels.tolist() == [2, 0, 1] and stored.labels.dtype == torch.int64
    torch.save(torch.tensor([0, 1, 2]), tmp_path / "z.pt")
    other, sha_other = read_set(tmp_path / "x.pt", SetSource("tensor", normalization="dc", labels=tmp_path / "z.pt"))
    assert other.labels.tolist() == [0, 1, 2] and sha != sha_other  # the hash covers the labels file too
    torch.save({"image_syn": images(2), "label_syn": torch.tensor([1, 0])}, tmp_path / "d.pt")
    custom = "0.5,0.5,0.5/0.25,0.25,0.25"
    stored, _ = read_set(tmp_path / "d.pt", SetSource("tensor", normalization=custom))
    assert stored.labels.tolist() == [1, 0] and stored.mean == (0.5, 0.5, 0.5) and stored.std == (0.25, 0.25, 0.25)


def test_unknown_files_and_bad_options_give_one_line(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2)}, path)
    with pytest.raises(ForeignSetError) as info:
        read_set(path)
    message = str(info.value)
    assert "\n" not in message and "weights.pt" in message and "no known format" in message
    with pytest.raises(ValueError, match="'zca' is not supported"):
        resolve_normalization("zca")
    with pytest.raises(ValueError, match="`format` must be one of"):
        SetSource("npz")
    with pytest.raises(ValueError, match="`normalization` must be one of"):
        SetSource(normalization="cifar")


def test_cells_train_with_soft_labels_and_the_learned_rate(tmp_path: Path, fake_cifar: Path) -> None:
    folder = tmp_path / "mtt"
    folder.mkdir()
    torch.save(images(4), folder / "images_best.pt")
    soft = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    torch.save(soft, folder / "labels_best.pt")
    torch.save(torch.tensor(0.05), folder / "lr_best.pt")
    spec = SetSpec.from_path(folder, source=SetSource(normalization="dc"))
    settings = protocol_settings("dsa", epochs=2, batch_size=8, num_classes=2, data_root=str(fake_cifar))
    result = run_cell(Cell(spec, ModelSpec("convnet", width=8), seed=0), settings)
    assert result.set_info["format"] == "mtt" and result.set_info["soft_labels"] is True
    assert result.set_info["learned_lr"] == pytest.approx(0.05) and result.set_info["lr"] == pytest.approx(0.05)
    ignored = run_cell(
        Cell(spec, ModelSpec("convnet", width=8), seed=0),
        settings.__class__(**{**settings.to_dict(), "use_learned_lr": False}),
    )
    assert ignored.set_info["lr"] == 0.01


def test_command_line_reads_a_foreign_set_and_refuses_a_missing_normalisation(
    tmp_path: Path, fake_cifar: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "res_DC_CIFAR10_ConvNet_1ipc.pt"
    torch.save({"data": [[images(2), torch.tensor([0, 1])]], "accs_all_exps": {}}, path)
    torch.save(images(2), tmp_path / "images_best.pt")
    torch.save(torch.tensor([0, 1]), tmp_path / "labels_best.pt")
    common = ["--models", "convnet", "--convnet-width", "8", "--epochs", "1", "--seeds", "1", "--batch-size", "8"]
    common += ["--data-root", str(fake_cifar), "--quiet", "--protocol", "dsa"]
    assert main([str(path), *common, "--out", str(tmp_path / "e1")]) == 0
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "images_best.pt"), *common, "--out", str(tmp_path / "e2")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--set-normalization" in err[0] and not (tmp_path / "e2" / "settings.json").exists()

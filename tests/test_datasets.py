"""Datasets beyond CIFAR-10's own tests: any image folder, class names, parse_classes, and an offline --download."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmdc_modules.condensation import (
    CIFAR10_CLASSES,
    DatasetDownloadError,
    ImageData,
    dataset_classes,
    load_cifar10,
    load_image_folder,
    parse_classes,
)


def write_folder(root: Path, split: str, classes: dict[str, int], size: tuple[int, int] = (12, 10)) -> dict:
    """``root/split/<class>/<i>.png`` of ``size`` (width, height); returns the CHW tensors per class."""
    rng = np.random.default_rng(0)
    written: dict[str, list[torch.Tensor]] = {}
    for name, count in classes.items():
        folder = root / split / name
        folder.mkdir(parents=True)
        written[name] = []
        for i in range(count):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels, mode="RGB").save(folder / f"{i}.png")
            written[name].append(torch.from_numpy(pixels).permute(2, 0, 1))
    return written


# ------------------------------------------------------------------------------------------------------------------
# Any image folder with N classes
# ------------------------------------------------------------------------------------------------------------------


def test_image_folder_with_five_classes_keeps_pixels_names_and_order(tmp_path: Path) -> None:
    names = {"tulip": 2, "rose": 3, "daisy": 1, "iris": 2, "lily": 1}
    written = write_folder(tmp_path, "train", names)
    data = load_image_folder(tmp_path, progress=False)
    assert isinstance(data, ImageData)
    assert data.class_names == ("daisy", "iris", "lily", "rose", "tulip")
    assert data.images.shape == (9, 3, 10, 12) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0, 1, 1, 2, 3, 3, 3, 4, 4]
    expected = torch.stack([t for name in data.class_names for t in written[name]])
    assert torch.equal(data.images, expected)


def test_image_folder_subset_keeps_labels_and_all_class_names(tmp_path: Path) -> None:
    write_folder(tmp_path, "test", {"a": 3, "b": 3, "c": 3})
    data = load_image_folder(tmp_path, "test", classes=[2, 0], per_class=2, progress=False)
    assert data.labels.tolist() == [0, 0, 2, 2] and data.class_names == ("a", "b", "c")


def test_image_folder_refuses_mixed_sizes_naming_the_file(tmp_path: Path) -> None:
    write_folder(tmp_path, "train", {"a": 1})
    bad = tmp_path / "train" / "a" / "1.png"
    Image.new("RGB", (5, 5)).save(bad)
    with pytest.raises(ValueError, match=r"must be a 12x10 RGB image, got a 5x5") as info:
        load_image_folder(tmp_path, progress=False)
    assert str(bad) in str(info.value)


def test_image_folder_missing_split_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_image_folder(tmp_path / "none", progress=False)
    message = str(info.value)
    assert "<class>/*.png" in message and "--download" in message and "../shared" not in message
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"hold no \.png/\.jpg images"):
        load_image_folder(tmp_path / "empty", progress=False)


def test_dataset_classes(tmp_path: Path) -> None:
    write_folder(tmp_path / "flowers", "train", {"rose": 1, "daisy": 1})
    assert dataset_classes(tmp_path / "flowers") == ("daisy", "rose")
    write_folder(tmp_path / "cifar", "train", {"ship": 1, "cat": 1})
    assert dataset_classes(tmp_path / "cifar") == CIFAR10_CLASSES  # labels are CIFAR-10 indices there
    (tmp_path / "batches" / "cifar-10-batches-py").mkdir(parents=True)
    assert dataset_classes(tmp_path / "batches") == CIFAR10_CLASSES
    with pytest.raises(FileNotFoundError, match="no train images"):
        dataset_classes(tmp_path / "nothing")


# ------------------------------------------------------------------------------------------------------------------
# parse_classes
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [("", list(range(10))), ("  ", list(range(10))), ("3", [3]), ("3,8", [3, 8]), ("ship, 3", [8, 3]),
     ("Cat,TRUCK", [3, 9]), ("airplane", [0])],
)  # fmt: skip
def test_parse_classes_accepts_indices_and_names(text: str, expected: list[int]) -> None:
    assert parse_classes(text, CIFAR10_CLASSES) == expected


def test_parse_classes_foo_is_one_line_listing_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        parse_classes("foo", CIFAR10_CLASSES, name="--classes")
    message = str(info.value)
    assert message.startswith("`--classes`: 'foo'") and "\n" not in message
    assert all(name in message for name in CIFAR10_CLASSES) and "0-9" in message


@pytest.mark.parametrize(
    "text,pattern",
    [("10", "10 is out of range; valid indices are 0-9"), ("-1", "-1 is out of range"), ("1,,2", "empty entry"),
     ("3,cat", r"class 3 \(cat\) is listed twice"), ("cat,dog,", "empty entry"), ("3.5", "'3.5' is neither")],
)  # fmt: skip
def test_parse_classes_rejects(text: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        parse_classes(text, CIFAR10_CLASSES)


# ------------------------------------------------------------------------------------------------------------------
# Offline --download
# ------------------------------------------------------------------------------------------------------------------


def _offline(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    import torchvision.datasets.cifar

    def fail(url: str, download_root: str, **kwargs) -> None:
        root = Path(download_root)
        root.mkdir(parents=True, exist_ok=True)
        (root / "cifar-10-python.tar.gz").write_bytes(b"partial")  # what an interrupted transfer leaves
        raise error

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", fail)


@pytest.mark.parametrize(
    "error", [urllib.error.URLError("[Errno -3] Temporary failure in name resolution"), OSError("Network is down")]
)
def test_offline_download_is_one_line_and_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    _offline(monkeypatch, error)
    root = tmp_path / "data" / "cifar10"
    with pytest.raises(DatasetDownloadError) as info:
        load_cifar10(root, download=True, progress=False)
    message = str(info.value)
    assert "\n" not in message and str(root) in message and "could not download CIFAR-10" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []  # neither data/ nor data/cifar10 is left behind


def test_offline_download_into_an_existing_folder_keeps_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _offline(monkeypatch, urllib.error.URLError("offline"))
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(DatasetDownloadError, match="offline"):
        load_cifar10(tmp_path, download=True, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_real_cifar10_as_an_image_folder() -> None:
    root = Path(__file__).parents[1] / "data" / "cifar10"
    if not (root / "test").is_dir():
        pytest.skip(f"CIFAR-10 is not unpacked at {root}")
    data = load_image_folder(root, "test", classes=[3, 8], per_class=4, progress=False)
    assert data.class_names == CIFAR10_CLASSES and data.labels.tolist() == [3] * 4 + [8] * 4
    images, labels = load_cifar10(root, "test", classes=[3, 8], per_class=4, progress=False)
    assert torch.equal(images, data.images) and torch.equal(labels, data.labels)

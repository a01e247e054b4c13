"""Tests for the data modules of hmdc_modules.condensation: datasets (CIFAR-10, image folders), normalisation and
synthetic-set files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hmdc_modules.condensation import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    SyntheticSet,
    denormalize,
    load_cifar10,
    load_synthetic_set,
    normalize,
    read_synthetic_set,
    save_synthetic_set,
    synthetic,
)

SETTINGS = settings(deadline=None, max_examples=20)
REPO = Path(__file__).parents[1]


# ----------------------------------------------------------------------------------------------------------------
# Fake CIFAR-10 trees
# ----------------------------------------------------------------------------------------------------------------


def write_image_tree(
    root: Path, split: str, classes: dict[str, list[str]], *, suffix: str = ".png", seed: int = 0
) -> dict[str, list[np.ndarray]]:
    """Write ``root/split/<class>/<stem><suffix>`` with random 32x32 RGB pixels; return the HWC arrays per class."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    for name, stems in classes.items():
        folder = root / split / name
        folder.mkdir(parents=True)
        written[name] = []
        for stem in stems:
            pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels, mode="RGB").save(folder / f"{stem}{suffix}")
            written[name].append(pixels)
    return written


def chw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1)


def write_batches(root: Path, per_file: int = 6, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A fake ``cifar-10-batches-py``: pickled dicts like the real files (data (n, 3072) uint8, labels list)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    content = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        flat = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_file)]
        entry = {"batch_label": f"fake {name}", "labels": labels, "data": flat, "filenames": ["x.png"] * per_file}
        with (folder / name).open("wb") as handle:
            pickle.dump(entry, handle, protocol=2)
        content[name] = (flat, labels)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": per_file}, handle, protocol=2)
    return content


# ----------------------------------------------------------------------------------------------------------------
# load_cifar10: image folders
# ----------------------------------------------------------------------------------------------------------------


def test_image_folders_png_pixels_exact_labels_by_class_name_numeric_order(tmp_path: Path):
    stems = ["0", "1", "2", "10"]  # numeric order 0, 1, 2, 10 (lexicographic would put 10 before 2)
    written = write_image_tree(tmp_path, "train", {"airplane": stems, "cat": stems, "ship": stems})
    (tmp_path / "train" / ".complete").touch()
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / "train" / "cat" / ".hidden.png").write_bytes(b"not an image, hidden")

    images, labels = load_cifar10(tmp_path, "train", progress=False)

    expected = torch.stack([chw(p) for name in ("airplane", "cat", "ship") for p in written[name]])
    assert images.dtype == torch.uint8 and images.shape == (12, 3, 32, 32)
    assert torch.equal(images, expected)
    assert labels.dtype == torch.int64
    assert labels.tolist() == [0] * 4 + [3] * 4 + [8] * 4  # CIFAR10_CLASSES indices, not 0, 1, 2


def test_image_folders_unknown_names_use_sorted_order_and_name_sort(tmp_path: Path):
    written = write_image_tree(tmp_path, "test", {"zebra": ["b", "a"], "apple": ["img10", "img9"]})
    images, labels = load_cifar10(str(tmp_path), "test", progress=False)
    assert labels.tolist() == [0, 0, 1, 1]  # apple, zebra
    expected = [written["apple"][0], written["apple"][1], written["zebra"][1], written["zebra"][0]]  # by name
    assert torch.equal(images, torch.stack([chw(p) for p in expected]))


def test_image_folders_subset_keeps_original_labels_and_first_files(tmp_path: Path):
    stems = [str(i) for i in range(4)]
    written = write_image_tree(tmp_path, "train", {name: stems for name in ("bird", "dog", "truck")})
    images, labels = load_cifar10(tmp_path, classes=[9, 2], per_class=2, progress=False)
    assert labels.tolist() == [2, 2, 9, 9]  # source (class-major) order, original indices
    expected = [written["bird"][0], written["bird"][1], written["truck"][0], written["truck"][1]]
    assert torch.equal(images, torch.stack([chw(p) for p in expected]))

    images, labels = load_cifar10(tmp_path, per_class=1, progress=False)
    assert labels.tolist() == [2, 5, 9]
    with pytest.raises(ValueError, match=r"`classes`.*\[3\]"):
        load_cifar10(tmp_path, classes=[3], progress=False)
    with pytest.raises(ValueError, match="`per_class`=5"):
        load_cifar10(tmp_path, per_class=5, progress=False)


def test_image_folders_jpeg_decodes_close_to_source(tmp_path: Path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "train" / "frog"
    folder.mkdir(parents=True)
    smooth = np.kron(rng.integers(0, 256, size=(4, 4, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # JPEG-friendly
    Image.fromarray(smooth, mode="RGB").save(folder / "0.jpg", quality=95, subsampling=0)
    Image.fromarray(smooth, mode="RGB").save(folder / "1.JPEG", quality=95, subsampling=0)
    images, labels = load_cifar10(tmp_path, progress=False)
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [6, 6]
    assert (images.float() - chw(smooth).float()).abs().mean() < 6.0


def test_image_folders_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    write_image_tree(tmp_path, "train", {"deer": ["0", "1"]})
    load_cifar10(tmp_path, progress=True)
    assert "CIFAR-10 train" in capsys.readouterr().err
    load_cifar10(tmp_path, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("size", "mode", "why"),
    [((16, 16), "RGB", "16x16"), ((32, 32), "L", "mode 'L'"), ((32, 32), "RGBA", "mode 'RGBA'")],
)
def test_image_folders_reject_wrong_images_naming_the_file(tmp_path: Path, size: tuple[int, int], mode: str, why: str):
    write_image_tree(tmp_path, "train", {"horse": ["0"]})
    bad = tmp_path / "train" / "horse" / "1.png"
    Image.new(mode, size).save(bad)
    with pytest.raises(ValueError, match=r"1.png") as info:
        load_cifar10(tmp_path, progress=False)
    assert str(bad) in str(info.value) and why in str(info.value)


def test_image_folders_reject_corrupt_file(tmp_path: Path):
    write_image_tree(tmp_path, "train", {"horse": ["0"]})
    bad = tmp_path / "train" / "horse" / "1.png"
    bad.write_bytes(b"\x89PNG but not really")
    with pytest.raises(ValueError, match="could not be decoded") as info:
        load_cifar10(tmp_path, progress=False)
    assert str(bad) in str(info.value)


# ----------------------------------------------------------------------------------------------------------------
# load_cifar10: torchvision layout
# ----------------------------------------------------------------------------------------------------------------


def test_torchvision_layout_reads_batches_in_order(tmp_path: Path):
    content = write_batches(tmp_path)
    images, labels = load_cifar10(tmp_path, "train", progress=False)
    flat = np.concatenate([content[f"data_batch_{i}"][0] for i in range(1, 6)])
    expected_labels = [v for i in range(1, 6) for v in content[f"data_batch_{i}"][1]]
    assert images.shape == (30, 3, 32, 32) and images.dtype == torch.uint8 and images.is_contiguous()
    assert labels.tolist() == expected_labels
    # Row layout of the real files: 1024 red, 1024 green, 1024 blue values, each plane row-major.
    for n in range(30):
        for c in range(3):
            assert torch.equal(images[n, c].flatten(), torch.from_numpy(flat[n, 1024 * c : 1024 * (c + 1)]))

    test_images, test_labels = load_cifar10(tmp_path, "test", progress=False)
    assert torch.equal(test_images.reshape(6, -1), torch.from_numpy(content["test_batch"][0]))
    assert test_labels.tolist() == content["test_batch"][1]


def test_torchvision_layout_subset_keeps_source_order(tmp_path: Path):
    write_batches(tmp_path)
    all_images, all_labels = load_cifar10(tmp_path, progress=False)
    present = sorted(set(all_labels.tolist()))
    chosen = present[:2]
    images, labels = load_cifar10(tmp_path, classes=chosen[::-1], per_class=1, progress=False)
    firsts = sorted(int((all_labels == c).nonzero()[0]) for c in chosen)
    assert labels.tolist() == [int(all_labels[i]) for i in firsts]
    assert torch.equal(images, all_images[firsts])


def test_torchvision_itself_refuses_fake_batches_hence_own_reader(tmp_path: Path):
    # Documents why load_cifar10 reads the pickles itself: CIFAR10(download=False) checks the MD5 of the originals.
    from torchvision.datasets import CIFAR10

    write_batches(tmp_path)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(tmp_path), train=True, download=False)


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (os.getcwd, ())


def test_torchvision_layout_refuses_pickled_code(tmp_path: Path):
    write_batches(tmp_path)
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("wb") as handle:
        pickle.dump({"data": _Payload(), "labels": []}, handle, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch.*refusing to load global '\w+\.getcwd'"):
        load_cifar10(tmp_path, "test", progress=False)


def test_torchvision_layout_accepts_legacy_numpy_core_names(tmp_path: Path):
    # The original files were pickled by Python 2 / numpy 1 and name ``numpy.core.multiarray``.
    content = write_batches(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    legacy = path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in legacy
    path.write_bytes(legacy)
    images, labels = load_cifar10(tmp_path, "test", progress=False)
    assert torch.equal(images.reshape(6, -1), torch.from_numpy(content["test_batch"][0]))
    assert labels.tolist() == content["test_batch"][1]


def test_torchvision_layout_missing_batch_file(tmp_path: Path):
    write_batches(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(tmp_path, progress=False)


def test_torchvision_layout_is_preferred_over_image_folders(tmp_path: Path):
    write_batches(tmp_path)
    write_image_tree(tmp_path, "test", {"cat": ["0"]})
    images, _ = load_cifar10(tmp_path, "test", progress=False)
    assert images.shape[0] == 6


def test_download_goes_through_torchvision_and_converts_nhwc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torchvision.datasets

    calls = []
    nhwc = np.arange(2 * 32 * 32 * 3, dtype=np.int64).reshape(2, 32, 32, 3).astype(np.uint8)

    class FakeCIFAR10:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            self.data = nhwc
            self.targets = [4, 7]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    images, labels = load_cifar10(tmp_path, "test", download=True, progress=False)
    assert calls == [(str(tmp_path), False, True)]
    assert torch.equal(images, torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    assert labels.tolist() == [4, 7]


# ----------------------------------------------------------------------------------------------------------------
# load_cifar10: errors
# ----------------------------------------------------------------------------------------------------------------


def test_missing_data_names_root_and_both_ways(tmp_path: Path):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(root, progress=False)
    message = str(info.value)
    assert str(root) in message
    assert "--download" in message and "internet" in message
    assert f"{root / 'train'}/<class>/*.png|jpg" in message  # the image-folder layout
    assert "../shared" not in message and "unpack.py" not in message and "\n" not in message

    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no class folders"):
        load_cifar10(tmp_path / "empty", progress=False)


def test_argument_errors(tmp_path: Path):
    with pytest.raises(ValueError, match=r"`split`.*'val'"):
        load_cifar10(tmp_path, "val")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`root`"):
        load_cifar10(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`classes`"):
        load_cifar10(tmp_path, classes="cat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`classes`"):
        load_cifar10(tmp_path, classes=[])
    with pytest.raises(ValueError, match=r"`classes`.*repeat"):
        load_cifar10(tmp_path, classes=[1, 1])
    with pytest.raises(ValueError, match="`per_class`"):
        load_cifar10(tmp_path, per_class=0)
    with pytest.raises(TypeError, match="`download`"):
        load_cifar10(tmp_path, download="yes")  # type: ignore[arg-type]


def test_real_cifar10_if_unpacked():
    """Optional: the real (JPEG) CIFAR-10 copy, if someone unpacked it into <repo>/data/cifar10."""
    root = REPO / "data" / "cifar10"
    shared = REPO / ".." / "shared" / "data" / "cifar10"
    if not (root / "test").is_dir():
        how = (
            "run `python ../shared/data/cifar10/unpack.py data/cifar10` (about 12 s) to enable"
            if shared.is_dir()
            else "no CIFAR-10 copy on this machine"
        )
        pytest.skip(f"real CIFAR-10 not unpacked at {root}: {how}")
    images, labels = load_cifar10(root, "test", classes=[3, 8], per_class=50, progress=False)
    assert images.shape == (100, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [3] * 50 + [8] * 50
    means = images.float().div(255).mean(dim=(0, 2, 3))
    assert ((means > 0.3) & (means < 0.7)).all()


# ----------------------------------------------------------------------------------------------------------------
# normalize / denormalize
# ----------------------------------------------------------------------------------------------------------------


def test_normalize_uint8_matches_per_channel_loop():
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = normalize(images)
    assert out.dtype == torch.float32
    for c in range(3):
        expected = (images[:, c].double() / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
        torch.testing.assert_close(out[:, c].double(), expected, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    channels=st.integers(1, 4),
    batch_dims=st.lists(st.integers(1, 3), max_size=2),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_normalize_denormalize_round_trip(seed: int, channels: int, batch_dims: list[int], dtype: torch.dtype):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch_dims, channels, 3, 2, generator=generator, dtype=dtype)
    mean = (torch.rand(channels, generator=generator) - 0.5).tolist()
    std = (torch.rand(channels, generator=generator) + 0.05).tolist()
    normed = normalize(x, mean, std)
    assert normed.dtype == dtype and normed.shape == x.shape
    for c in range(channels):
        torch.testing.assert_close(normed[..., c, :, :], (x[..., c, :, :] - mean[c]) / std[c])
    torch.testing.assert_close(denormalize(normed, mean, std), x)
    torch.testing.assert_close(denormalize(normed, torch.tensor(mean), torch.tensor(std)), x)


def test_normalize_is_differentiable_with_per_channel_scale():
    x = torch.rand(1, 3, 2, 2, requires_grad=True)
    normalize(x).sum().backward()
    for c in range(3):
        torch.testing.assert_close(x.grad[0, c], torch.full((2, 2), 1.0 / CIFAR10_STD[c]))


def test_normalize_errors():
    with pytest.raises(TypeError, match=r"`images`.*int32"):
        normalize(torch.zeros(1, 3, 2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="`mean`"):
        normalize(torch.zeros(1, 3, 2, 2), (0.5, 0.5), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"`std`.*> 0"):
        normalize(torch.zeros(1, 3, 2, 2), CIFAR10_MEAN, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="`images`"):
        normalize(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="`x`"):
        denormalize(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    with pytest.raises(TypeError, match="`mean`"):
        denormalize(torch.zeros(1, 3, 2, 2), "abc", CIFAR10_STD)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic-set files
# ----------------------------------------------------------------------------------------------------------------


def _walk_plain(value: Any) -> None:
    """Assert that ``value`` is made only of tensors and plain Python values."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            _walk_plain(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _walk_plain(item)
    else:
        assert value is None or isinstance(value, torch.Tensor | bool | int | float | str), type(value)


def _sample_set(n: int = 4, factor: int = 2) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(n + factor)
    return {
        "images": torch.randn(n, 3, 32, 32, generator=generator),
        "labels": torch.arange(n) % 2,
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "factor": factor,
        "ipc": n // 2,
        "iteration": 7,
    }


def test_save_read_round_trip_all_fields(tmp_path: Path):
    values = _sample_set()
    base = torch.randn(10, 3, 32, 32, requires_grad=True)
    images = base[2:6] * 1.0  # requires grad; saved detached
    view = values["images"].repeat(3, 1, 1, 1)[:4]  # a view of a larger storage: only the view may be saved
    extra = {"init": "aug_kmeans", "seed": 3, "lr": 0.005, "flags": [True, None], "nested": {"t": torch.ones(2)}}
    path = tmp_path / "runs" / "set.pt"  # parent folder created
    save_synthetic_set(path, images, values["labels"], **{k: values[k] for k in list(values)[2:]}, extra=extra)
    save_synthetic_set(tmp_path / "view.pt", view, values["labels"], **{k: values[k] for k in list(values)[2:]})

    loaded = read_synthetic_set(path)
    assert isinstance(loaded, SyntheticSet)
    torch.testing.assert_close(loaded.images, images.detach(), rtol=0, atol=0)
    assert not loaded.images.requires_grad
    assert torch.equal(loaded.labels, values["labels"]) and loaded.labels.dtype == torch.int64
    assert loaded.mean == pytest.approx(CIFAR10_MEAN) and loaded.std == pytest.approx(CIFAR10_STD)
    assert (loaded.factor, loaded.ipc, loaded.iteration) == (2, 2, 7)
    assert loaded.extra["init"] == "aug_kmeans" and loaded.extra["flags"] == [True, None]
    assert torch.equal(loaded.extra["nested"]["t"], torch.ones(2))
    assert isinstance(loaded.library_version, str) and loaded.library_version
    assert loaded.format_version == 1

    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain weights_only load works
    _walk_plain(raw)
    assert raw["format"] == "hmdc_modules.synthetic_set"
    assert set(raw) == {
        "format", "format_version", "images", "labels", "mean", "std", "factor", "ipc", "iteration",
        "library_version", "extra",
    }  # fmt: skip

    view_loaded = read_synthetic_set(tmp_path / "view.pt").images
    assert torch.equal(view_loaded, view)
    assert view_loaded.untyped_storage().nbytes() == view.numel() * view.element_size()


def test_save_is_atomic_and_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    values = _sample_set()
    path = tmp_path / "set.pt"
    save_synthetic_set(path, **values)
    save_synthetic_set(path, **{**values, "iteration": 8})  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.pt"]
    assert read_synthetic_set(path).iteration == 8

    real_save = torch.save

    def crash(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        real_save({"half": torch.zeros(3)}, f)  # some bytes reach the temporary file, then the process "dies"
        raise KeyboardInterrupt("simulated crash mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_synthetic_set(path, **{**values, "iteration": 9})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.pt"]  # temporary removed
    assert read_synthetic_set(path).iteration == 8  # previous file intact


def test_read_rejects_files_that_are_not_synthetic_sets(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"missing.pt"):
        read_synthetic_set(tmp_path / "missing.pt")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a torch file")
    with pytest.raises(ValueError, match=r"not a synthetic-set file.*weights_only"):
        read_synthetic_set(garbage)

    code = tmp_path / "code.pt"
    torch.save({"images": _Payload()}, code)
    with pytest.raises(ValueError, match=r"not a synthetic-set file.*weights_only"):
        read_synthetic_set(code)

    other = tmp_path / "state_dict.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match=r"not a synthetic-set file.*'weight'"):
        read_synthetic_set(other)

    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(ValueError, match="expected a dict"):
        read_synthetic_set(listed)

    values = _sample_set()
    path = tmp_path / "set.pt"
    save_synthetic_set(path, **values)
    raw = torch.load(path, weights_only=True)
    for change, pattern in [
        ({"format_version": 99}, "newer"),
        ({"labels": torch.zeros(3, dtype=torch.int64)}, "'labels'"),
        ({"factor": 0}, "'factor'"),
        ({"factor": 3}, "divisible"),
        ({"mean": [0.5]}, "'mean'"),
        ({"iteration": "7"}, "'iteration'"),
    ]:
        torch.save({**raw, **change}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=pattern):
            read_synthetic_set(tmp_path / "bad.pt")
    del raw["ipc"]
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"missing keys \['ipc'\]"):
        read_synthetic_set(tmp_path / "bad.pt")


def test_read_accepts_the_reference_implementation_format(tmp_path: Path):
    stored = torch.randn(3, 2, 3, 32, 32)
    path = tmp_path / "synthetic_images.pth"
    torch.save({"synthetic_images": stored, "init": "aug_kmeans", "factor": 2, "n_ipc": 2, "iteration": 5}, path)
    loaded = read_synthetic_set(path)
    assert torch.equal(loaded.images, stored.reshape(6, 3, 32, 32))
    assert loaded.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert (loaded.factor, loaded.ipc, loaded.iteration) == (2, 2, 5)
    assert loaded.mean == CIFAR10_MEAN and loaded.std == CIFAR10_STD
    assert loaded.extra == {"init": "aug_kmeans"} and loaded.library_version == "reference"


def test_save_errors(tmp_path: Path):
    values = _sample_set()
    path = tmp_path / "set.pt"
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"labels": values["labels"].float()}, TypeError, "`labels`"),
        ({"labels": torch.arange(3)}, ValueError, "`images` and `labels`"),
        ({"images": values["images"][:, :, :, :31]}, ValueError, "divisible by `factor`=2"),
        ({"images": torch.full((4, 3, 32, 32), float("nan"))}, ValueError, "`images`.*NaN"),
        ({"images": values["images"][0]}, ValueError, "`images`"),
        ({"mean": (0.5, 0.5)}, ValueError, "`mean`"),
        ({"std": (0.5, -0.5, 0.5)}, ValueError, "`std`"),
        ({"ipc": 0}, ValueError, "`ipc`"),
        ({"iteration": -1}, ValueError, "`iteration`"),
        ({"factor": 1.5}, TypeError, "`factor`"),
    ]
    for change, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            save_synthetic_set(path, **{**_sample_set(), **change})
    with pytest.raises(TypeError, match=r"`extra\['where'\]`"):
        save_synthetic_set(path, **_sample_set(), extra={"where": tmp_path})
    with pytest.raises(TypeError, match="`extra` keys"):
        save_synthetic_set(path, **_sample_set(), extra={1: "a"})
    assert not path.exists()


@pytest.mark.parametrize("factor", [1, 2])
def test_load_synthetic_set_decodes_formation(tmp_path: Path, factor: int):
    values = _sample_set(n=4, factor=factor)
    path = tmp_path / "set.pt"
    save_synthetic_set(path, **values)

    dataset = load_synthetic_set(path)
    images, labels = dataset.tensors
    assert images.shape == (factor * factor * 4, 3, 32, 32)
    assert len(dataset) == factor * factor * 4
    assert sorted(labels.tolist()) == sorted(values["labels"].tolist() * factor * factor)
    if factor == 1:
        assert torch.equal(images, values["images"]) and torch.equal(labels, values["labels"])
    else:
        # Independent check of one tile: the top-left 16x16 quarter of stored image j, upsampled bilinearly
        # (align_corners=True) to 32x32, is a decoded image with the label of image j.
        for j in range(4):
            tile = F.interpolate(values["images"][j : j + 1, :, :16, :16], size=(32, 32), mode="bilinear",
                                 align_corners=True)[0]  # fmt: skip
            matches = [i for i in range(len(images)) if torch.allclose(images[i], tile, atol=1e-6)]
            assert len(matches) == 1 and int(labels[matches[0]]) == int(values["labels"][j])

    packed_images, packed_labels = load_synthetic_set(path, decoded=False).tensors
    assert torch.equal(packed_images, values["images"]) and torch.equal(packed_labels, values["labels"])

    pixels, _ = load_synthetic_set(path, denormalized=True).tensors
    torch.testing.assert_close(pixels, denormalize(images, CIFAR10_MEAN, CIFAR10_STD))


def test_load_synthetic_set_argument_errors(tmp_path: Path):
    with pytest.raises(TypeError, match="`decoded`"):
        load_synthetic_set(tmp_path / "x.pt", decoded=1)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        load_synthetic_set(tmp_path / "x.pt")


def test_library_version_falls_back_to_unknown(monkeypatch: pytest.MonkeyPatch):
    import importlib.metadata

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert synthetic._library_version() == "unknown"


# ----------------------------------------------------------------------------------------------------------------
# load_cifar10: the P/C halves of protocol v2
# ----------------------------------------------------------------------------------------------------------------
def test_subset_is_the_split_of_the_full_data_in_both_layouts(tmp_path: Path) -> None:
    """``subset="C"`` gives the C half of ``pc_split`` over the full data; an image folder holding the same images
    (class by class, in the same order) gives the same images; P and C are disjoint and cover the data."""
    from hmdc_modules.condensation.splits import subset_indices

    write_batches(tmp_path / "batches", per_file=40)
    full_x, full_y = load_cifar10(tmp_path / "batches", "train", progress=False)
    for part in ("P", "C"):
        x, y = load_cifar10(tmp_path / "batches", "train", progress=False, subset=part)
        keep = subset_indices(full_y, part)
        assert torch.equal(x, full_x[keep]) and torch.equal(y, full_y[keep])
    p = subset_indices(full_y, "P")
    c = subset_indices(full_y, "C")
    assert not set(p.tolist()) & set(c.tolist()) and len(p) + len(c) == len(full_y)
    for label in full_y.unique().tolist():  # the same images as an image folder, class by class
        folder = tmp_path / "tree" / "train" / CIFAR10_CLASSES[label]
        folder.mkdir(parents=True)
        for i, image in enumerate(full_x[full_y == label]):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    batch_x, batch_y = load_cifar10(tmp_path / "batches", "train", progress=False, subset="C")
    tree_x, tree_y = load_cifar10(tmp_path / "tree", "train", progress=False, subset="C")
    for label in full_y.unique().tolist():
        assert torch.equal(tree_x[tree_y == label], batch_x[batch_y == label])


def test_subset_is_cut_before_classes_and_per_class(tmp_path: Path) -> None:
    from hmdc_modules.condensation.splits import subset_indices

    write_batches(tmp_path, per_file=40)
    full_x, full_y = load_cifar10(tmp_path, "train", progress=False)
    c = subset_indices(full_y, "C")
    label = int(full_y[c].bincount().argmax())
    members = c[full_y[c] == label][:3]
    x, y = load_cifar10(tmp_path, "train", progress=False, subset="C", classes=[label], per_class=3)
    assert torch.equal(x, full_x[members]) and y.tolist() == [label] * 3
    other = load_cifar10(tmp_path, "train", progress=False, subset="C", classes=[label], per_class=3, split_seed=7)[0]
    assert not torch.equal(other, x)  # another seed, another split


def test_subset_needs_the_training_split_and_a_known_name(tmp_path: Path) -> None:
    write_batches(tmp_path)
    with pytest.raises(ValueError, match=r"`subset` 'C' is a part of the training split; got split='test'"):
        load_cifar10(tmp_path, "test", progress=False, subset="C")
    with pytest.raises(ValueError, match=r"`subset`"):
        load_cifar10(tmp_path, "train", progress=False, subset="Q")  # type: ignore[arg-type]

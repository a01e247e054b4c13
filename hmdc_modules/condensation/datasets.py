"""Datasets: CIFAR-10 and any image folder with N classes, as one ``uint8`` tensor, labels and class names.

- [`load_cifar10`][hmdc_modules.condensation.datasets.load_cifar10] reads CIFAR-10 from its pickled batches
  (``root/cifar-10-batches-py``, what ``--download`` fetches) or from an image folder
  (``root/{train,test}/<class>/*.png|jpg|jpeg``).
- [`load_image_folder`][hmdc_modules.condensation.datasets.load_image_folder] reads any image folder with N
  classes and returns an [`ImageData`][hmdc_modules.condensation.datasets.ImageData] (images, labels, class names).
- [`dataset_classes`][hmdc_modules.condensation.datasets.dataset_classes] names the classes of a data folder without
  decoding it, and [`parse_classes`][hmdc_modules.condensation.datasets.parse_classes] turns a command-line class list
  (``"3,ship"``) into class indices.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from hmdc_modules._validation import check_choice, check_positive_int, describe
from hmdc_modules.condensation._cifar_batches import (
    SIDE,
    TORCHVISION_FOLDER,
    DatasetDownloadError,
    download_torchvision,
    read_torchvision_layout,
)
from hmdc_modules.condensation._image_files import class_folders, decode_files, select_files
from hmdc_modules.condensation.splits import PC_SPLIT_SEED, SPLIT_SUBSETS, subset_indices

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DatasetDownloadError",
    "ImageData",
    "dataset_classes",
    "load_cifar10",
    "load_image_folder",
    "parse_classes",
]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
"""Per-channel (R, G, B) mean of the CIFAR-10 training images, pixels scaled to $[0, 1]$."""

CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
"""Per-channel (R, G, B) standard deviation used with
[`CIFAR10_MEAN`][hmdc_modules.condensation.datasets.CIFAR10_MEAN]."""

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
"""The CIFAR-10 class names; a label is an index into this tuple."""


class ImageData(NamedTuple):
    """Images of a dataset with their labels and the names of all its classes.

    Attributes:
        images: ``uint8`` pixels in NCHW order (RGB).
        labels: ``int64`` class indices; label ``i`` is class ``class_names[i]``.
        class_names: The names of every class of the data (also those not loaded), in label order.

    Shape:
        - images: $(N, 3, H, W)$
        - labels: $(N,)$
    """

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]


def _missing_data_error(root: Path, split: str, detail: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"no {split} images under '{root}': {detail}. Expected an image folder '{root / split}/<class>/*.png|jpg' "
        f"(one folder per class) or CIFAR-10's batches '{root / TORCHVISION_FOLDER}'; get CIFAR-10 with `--download` "
        f"(download=True, needs internet) or pass the path of your image folder"
    )


def _check_root(root: Any) -> Path:
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"`root` must be a str or path, got {describe(root)}")
    return Path(root).expanduser()


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {describe(value)}")
    return value


def _check_classes(classes: Any) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, str | bytes) or not isinstance(classes, Sequence):
        raise TypeError(
            f"`classes` must be a sequence of class indices or None, got {describe(classes)} "
            "(parse_classes turns a text such as '3,ship' into indices)"
        )
    result = []
    for value in classes:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`classes` must hold ints (class indices), got {describe(value)} in {list(classes)!r}")
        result.append(int(value))
    if not result:
        raise ValueError("`classes` must name at least one class, got an empty sequence")
    if len(set(result)) != len(result):
        raise ValueError(f"`classes` must not repeat a class, got {result}")
    return result


def _select(labels: Tensor, classes: list[int] | None, per_class: int | None) -> Tensor | None:
    """Indices (ascending, i.e. source order) of the requested subset, or ``None`` for everything."""
    if classes is None and per_class is None:
        return None
    present = sorted(int(c) for c in labels.unique())
    if classes is None:
        classes = present
    unknown = [c for c in classes if c not in present]
    if unknown:
        raise ValueError(f"`classes` holds indices {unknown} absent from the data, whose classes are {present}")
    chosen = []
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        if per_class is not None:
            if members.numel() < per_class:
                raise ValueError(f"`per_class`={per_class} exceeds the {members.numel()} images of class {c}")
            members = members[:per_class]
        chosen.append(members)
    return torch.cat(chosen).sort().values


def _select_in_subset(
    labels: Tensor, subset: str, seed: int, classes: list[int] | None, per_class: int | None
) -> Tensor | None:
    """As ``_select``, within one part of the P/C split (cut before ``per_class`` takes the first of each class)."""
    if subset == "all":
        return _select(labels, classes, per_class)
    part = subset_indices(labels, subset, seed=seed)  # type: ignore[arg-type]  # each class is cut on its own
    inner = _select(labels[part], classes, per_class)
    return part if inner is None else part[inner]


def _split_folders(root: Path, split: str) -> list[Path]:
    split_dir = root / split
    if not split_dir.is_dir():
        raise _missing_data_error(root, split, f"'{split_dir}' does not exist")
    folders = class_folders(split_dir)
    if not folders:
        raise _missing_data_error(root, split, f"'{split_dir}' holds no class folders")
    return folders


def dataset_classes(root: str | os.PathLike[str], split: Literal["train", "test"] = "train") -> tuple[str, ...]:
    """The class names of a data folder, in label order, without decoding any image.

    CIFAR-10's batches, and an image folder whose class folders all carry CIFAR-10 names, give
    [`CIFAR10_CLASSES`][hmdc_modules.condensation.datasets.CIFAR10_CLASSES] (as
    [`load_cifar10`][hmdc_modules.condensation.datasets.load_cifar10] labels them); any other image folder gives its
    class-folder names, sorted.

    Args:
        root: The data folder.
        split: The split whose class folders are listed.

    Returns:
        The class names.

    Raises:
        FileNotFoundError: If ``root`` holds neither layout.

    Examples:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("zebra", "apple"):
        ...     (root / "train" / name).mkdir(parents=True)
        >>> dataset_classes(root)
        ('apple', 'zebra')
    """
    root = _check_root(root)
    check_choice("split", split, ("train", "test"))
    if (root / TORCHVISION_FOLDER).is_dir():
        return CIFAR10_CLASSES
    names = tuple(folder.name for folder in _split_folders(root, split))
    return CIFAR10_CLASSES if all(name in CIFAR10_CLASSES for name in names) else names


def parse_classes(text: str, class_names: Sequence[str], *, name: str = "classes") -> list[int]:
    """Turn a comma-separated class list (indices or names, e.g. ``"3,ship"``) into class indices.

    An empty (or blank) text selects every class. Names match exactly, else ignoring case. The order of the text is
    kept.

    Args:
        text: The class list, e.g. a command-line value.
        class_names: The names of the data's classes, in label order (e.g. from
            [`dataset_classes`][hmdc_modules.condensation.datasets.dataset_classes]).
        name: How messages name the list (e.g. ``"--classes"``).

    Returns:
        The class indices.

    Raises:
        TypeError: If ``text`` is not a str or ``class_names`` is not a sequence of str.
        ValueError: If an entry is empty, out of range, not a class name, or repeated; the message lists the valid
            indices and names.

    Examples:
        >>> parse_classes("3, ship", CIFAR10_CLASSES)
        [3, 8]
        >>> parse_classes("", ("cat", "dog"))
        [0, 1]
        >>> parse_classes("foo", ("cat", "dog"), name="--classes")
        Traceback (most recent call last):
        ...
        ValueError: `--classes`: 'foo' is neither a class index (0-1) nor a class name; valid names: cat, dog
    """
    if not isinstance(text, str):
        raise TypeError(f"`{name}` must be a str such as '0,3' or 'cat,ship', got {describe(text)}")
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"`class_names` must be a sequence of str, got {describe(class_names)}")
    names = list(class_names)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"`class_names` must be a non-empty sequence of str, got {names!r}")
    if not text.strip():
        return list(range(len(names)))
    valid = f"class index (0-{len(names) - 1}) nor a class name; valid names: {', '.join(names)}"
    folded = {n.lower(): i for i, n in reversed(list(enumerate(names)))}
    result: list[int] = []
    for token in (part.strip() for part in text.split(",")):
        if not token:
            raise ValueError(f"`{name}`: {text!r} holds an empty entry; give indices or names separated by commas")
        if token.lstrip("-").isdigit():
            index = int(token)
            if not 0 <= index < len(names):
                raise ValueError(f"`{name}`: {index} is out of range; valid indices are 0-{len(names) - 1}")
        elif token in names:
            index = names.index(token)
        elif token.lower() in folded:
            index = folded[token.lower()]
        else:
            raise ValueError(f"`{name}`: {token!r} is neither a {valid}")
        if index in result:
            raise ValueError(f"`{name}`: class {index} ({names[index]}) is listed twice in {text!r}")
        result.append(index)
    return result


def _check_common(split: Any, per_class: Any, progress: Any, classes: Any) -> list[int] | None:
    check_choice("split", split, ("train", "test"))
    _check_bool("progress", progress)
    selected = _check_classes(classes)
    if per_class is not None:
        check_positive_int("per_class", per_class)
    return selected


def load_image_folder(
    root: str | os.PathLike[str],
    split: Literal["train", "test"] = "train",
    *,
    classes: Sequence[int] | None = None,
    per_class: int | None = None,
    progress: bool = True,
) -> ImageData:
    """Load ``root/{split}/<class>/*.png|jpg|jpeg``: any number of classes, one folder each.

    Class names are the folder names, sorted; a label is the index of its folder's name. Within a class, files are
    sorted numerically when every stem is an integer (``2.png`` before ``10.png``), else by name; hidden files and
    other extensions are ignored. Every image must be RGB and of the size of the first one read.

    Args:
        root: The data folder (holding ``train``/``test``).
        split: ``"train"`` or ``"test"``.
        classes: Class indices to keep (labels keep their index); ``None`` keeps all.
        per_class: Keep only the first ``per_class`` images of each kept class; ``None`` keeps all.
        progress: Whether to show a progress bar while decoding.

    Returns:
        An [`ImageData`][hmdc_modules.condensation.datasets.ImageData]; ``class_names`` lists every class folder.

    Raises:
        FileNotFoundError: If ``root/split`` is missing or holds no class folders or no images.
        ValueError: If an image cannot be decoded, is not RGB or differs in size (the message names the file), or
            ``classes``/``per_class`` ask for what the data lacks.
        TypeError: If an argument has the wrong type.

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("dog", "cat"):
        ...     (root / "train" / name).mkdir(parents=True)
        ...     Image.new("RGB", (8, 6)).save(root / "train" / name / "0.png")
        >>> data = load_image_folder(root, progress=False)
        >>> data.images.shape, data.labels.tolist(), data.class_names
        (torch.Size([2, 3, 6, 8]), [0, 1], ('cat', 'dog'))
    """
    root = _check_root(root)
    selected = _check_common(split, per_class, progress, classes)
    folders = _split_folders(root, split)
    names = tuple(folder.name for folder in folders)
    files, labels = select_files(folders, list(range(len(names))), selected, per_class)
    if not files:
        raise _missing_data_error(root, split, f"the class folders of '{root / split}' hold no .png/.jpg images")
    return ImageData(decode_files(files, f"{root.name} {split}", progress, None), labels, names)


def load_cifar10(
    root: str | os.PathLike[str],
    split: Literal["train", "test"] = "train",
    *,
    download: bool = False,
    progress: bool = True,
    classes: Sequence[int] | None = None,
    per_class: int | None = None,
    subset: Literal["all", "P", "C"] = "all",
    split_seed: int = PC_SPLIT_SEED,
) -> tuple[Tensor, Tensor]:
    """Load a CIFAR-10 split as one ``uint8`` image tensor and its labels.

    Sources, in order of preference:

    1. ``download=True``: ``torchvision.datasets.CIFAR10(root, download=True)`` fetches the archive into
       ``root/cifar-10-batches-py`` if it is not already there (checking its MD5 sums; needs internet). Without a
       network this fails with one [`DatasetDownloadError`][hmdc_modules.condensation.datasets.DatasetDownloadError]
       line and removes whatever the attempt created (no empty data folder is left).
    2. ``root/cifar-10-batches-py``: the pickled batch files are read directly, with an unpickler that only accepts
       numpy arrays (torchvision's ``CIFAR10(download=False)`` insists on the MD5 sums of the original files, which
       rejects any re-packed copy; no checksum is verified on this path).
    3. ``root/{split}/<class>/*.png|jpg|jpeg`` (an image folder of 32x32 RGB images). Each class folder becomes a
       label: its index in [`CIFAR10_CLASSES`][hmdc_modules.condensation.datasets.CIFAR10_CLASSES] when every folder
       name is a CIFAR-10 class name (so a tree holding only ``cat/`` and ``ship/`` gives labels 3 and 8), otherwise
       its position in the sorted folder names. Files are ordered as in
       [`load_image_folder`][hmdc_modules.condensation.datasets.load_image_folder]; only the selected files are
       decoded, with a progress bar.

    ``classes`` and ``per_class`` restrict the result to a subset (for tiny CPU runs): the samples of the listed
    classes, at most the first ``per_class`` of each (in source order). Labels keep their original class indices
    (``classes=[3, 8]`` gives labels 3 and 8, not 0 and 1), and the samples keep their source order (the
    interleaved order of the batch files; class by class for image folders).

    ``subset="P"`` or ``"C"`` keeps one half of the fixed pretraining/condensation split of the training set
    ([`pc_split`][hmdc_modules.condensation.splits.pc_split] with ``split_seed``; CPU protocol v2 pretrains on P and
    condenses from C). The split is cut first, class by class, so ``per_class`` then takes the first images of each
    class *within* that half, and a subset of ``classes`` gets the same images as the full data would.

    Args:
        root: The data folder (holding ``cifar-10-batches-py`` or ``train``/``test``).
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        download: Whether to let torchvision download the data (needs internet).
        progress: Whether to show a progress bar while decoding image files.
        classes: Class indices to keep; ``None`` keeps all.
        per_class: Keep only the first ``per_class`` images of each kept class; ``None`` keeps all.
        subset: ``"all"`` (the default), or the ``"P"``/``"C"`` half of the training split.
        split_seed: The seed of the P/C split (protocol v2's by default).

    Returns:
        ``(images, labels)``: ``images`` ``uint8`` in NCHW order (RGB), ``labels`` ``int64`` class indices.

    Raises:
        FileNotFoundError: If neither layout is found under ``root`` (the message names ``root`` and the ways to
            get the data) or a batch file is missing.
        DatasetDownloadError: If ``download=True`` and the download fails (one line; nothing is left behind).
        ValueError: If an image is not a 32x32 8-bit RGB image (the message names the file), a batch file is not a
            CIFAR batch, ``split`` is unknown, ``classes`` names a class absent from the data or repeats one, or a
            class has fewer than ``per_class`` images, ``subset`` is unknown, or ``subset`` is ``"P"``/``"C"``
            with ``split="test"``.
        TypeError: If an argument has the wrong type.

    Shape:
        - output images: $(N, 3, 32, 32)$, ``torch.uint8``
        - output labels: $(N,)$, ``torch.int64``

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "test" / "ship").mkdir(parents=True)
        >>> for i in range(3):
        ...     Image.new("RGB", (32, 32)).save(root / "test" / "ship" / f"{i}.png")
        >>> images, labels = load_cifar10(root, "test", per_class=2, progress=False)
        >>> images.shape, labels.tolist()
        (torch.Size([2, 3, 32, 32]), [8, 8])
    """
    root = _check_root(root)
    _check_bool("download", download)
    selected = _check_common(split, per_class, progress, classes)
    check_choice("subset", subset, SPLIT_SUBSETS)
    if subset != "all" and split != "train":
        raise ValueError(f"`subset` {subset!r} is a part of the training split; got split={split!r}")

    if download:
        images, labels = download_torchvision(root, split)
    elif (root / TORCHVISION_FOLDER).is_dir():
        images, labels = read_torchvision_layout(root, split, lambda detail: _missing_data_error(root, split, detail))
    elif (root / split).is_dir():
        folders = _split_folders(root, split)
        names = [folder.name for folder in folders]
        if all(name in CIFAR10_CLASSES for name in names):
            indices = [CIFAR10_CLASSES.index(name) for name in names]
        else:
            indices = list(range(len(names)))
        files, labels = select_files(folders, indices, selected, per_class if subset == "all" else None)
        if not files:
            raise _missing_data_error(root, split, f"the class folders of '{root / split}' hold no .png/.jpg images")
        if subset != "all":  # only the chosen files are decoded
            keep = _select_in_subset(labels, subset, split_seed, None, per_class)
            files, labels = ([files[i] for i in keep], labels[keep]) if keep is not None else (files, labels)
        return decode_files(files, f"CIFAR-10 {split}", progress, (SIDE, SIDE)), labels
    else:
        raise _missing_data_error(root, split, "neither layout is there")

    keep = _select_in_subset(labels, subset, split_seed, selected, per_class)
    if keep is not None:
        images, labels = images[keep], labels[keep]
    return images.contiguous(), labels

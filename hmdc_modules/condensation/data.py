"""CIFAR-10 loading, pixel normalisation and synthetic-set files.

- [`load_cifar10`][hmdc_modules.condensation.data.load_cifar10] reads CIFAR-10 from torchvision's pickled batches
  (``root/cifar-10-batches-py``) or from image folders (``root/{train,test}/<class>/*.png|jpg``, the layout the
  offline copy's ``unpack.py`` writes) into one ``uint8`` tensor.
- [`normalize`][hmdc_modules.condensation.data.normalize] / [`denormalize`][hmdc_modules.condensation.data.denormalize]
  map between pixels
  in $[0, 1]$ and the channel-standardised space the synthetic images live in.
- [`save_synthetic_set`][hmdc_modules.condensation.data.save_synthetic_set],
  [`read_synthetic_set`][hmdc_modules.condensation.data.read_synthetic_set] and
  [`load_synthetic_set`][hmdc_modules.condensation.data.load_synthetic_set] store and reload a condensed set as a plain
  dictionary of tensors and Python values, readable with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from hmdc_modules._validation import (
    check_choice,
    check_finite,
    check_positive_int,
    check_same_batch,
    check_tensor,
    describe,
)
from hmdc_modules.condensation.io import FileFormatError, atomic_torch_save, load_torch_file

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "SyntheticSet",
    "denormalize",
    "load_cifar10",
    "load_synthetic_set",
    "normalize",
    "read_synthetic_set",
    "save_synthetic_set",
]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
"""Per-channel (R, G, B) mean of the CIFAR-10 training images, pixels scaled to $[0, 1]$."""

CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
"""Per-channel (R, G, B) standard deviation used with [`CIFAR10_MEAN`][hmdc_modules.condensation.data.CIFAR10_MEAN]."""

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

_TORCHVISION_FOLDER = "cifar-10-batches-py"
_BATCH_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_SIDE = 32

_FORMAT = "hmdc_modules.synthetic_set"
_FORMAT_VERSION = 1
_REQUIRED_KEYS = ("images", "labels", "mean", "std", "factor", "ipc", "iteration")
_REFERENCE_KEYS = ("synthetic_images", "factor", "n_ipc", "iteration")


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------------------------


def _missing_data_error(root: Path, split: str, detail: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"CIFAR-10 {split} split not found under root '{root}': {detail}. Expected either torchvision's layout "
        f"'{root / _TORCHVISION_FOLDER}' or image folders '{root / split}/<class>/*.png|jpg'. Get it with "
        f"`--download` (download=True: torchvision fetches it, needs internet) or, offline, with "
        f"`python ../shared/data/cifar10/unpack.py {root}` (unpacks the shared copy into image folders)."
    )


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batch files that only resolves the few globals a pickled numpy array needs."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        # The original files were written by Python 2 / numpy 1 and name ``numpy.core``; numpy 2 calls it ``_core``.
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}': not part of a CIFAR batch file")
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            # numpy 1.x has no ``numpy._core``: fall back to the historical name.
            return super().find_class(module.replace("numpy._core", "numpy.core"), name)


def _read_batch_file(path: Path) -> tuple[Tensor, Tensor]:
    """Read one pickled CIFAR batch: (images uint8 (n, 3, 32, 32), labels int64 (n,))."""
    import numpy as np

    try:
        with path.open("rb") as handle:
            entry = _BatchUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise ValueError(f"CIFAR-10 batch file '{path}' could not be read as a CIFAR batch: {error}") from error
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"CIFAR-10 batch file '{path}' must hold a dict with 'data' and 'labels', got {keys}")
    data, labels = entry["data"], entry["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        got = f"shape {data.shape} and dtype {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"CIFAR-10 batch file '{path}': 'data' must be a uint8 array of shape (n, 3072), got {got}")
    if not isinstance(labels, list | tuple | np.ndarray) or len(labels) != data.shape[0]:
        count = len(labels) if isinstance(labels, list | tuple | np.ndarray) else describe(labels)
        raise ValueError(f"CIFAR-10 batch file '{path}': {data.shape[0]} images but {count} labels")
    # Each row holds the red, then green, then blue 32x32 plane: already channels-first.
    images = torch.from_numpy(data.reshape(-1, 3, _SIDE, _SIDE).copy())
    return images, torch.as_tensor(list(labels), dtype=torch.int64)


def _read_torchvision_layout(root: Path, split: str) -> tuple[Tensor, Tensor]:
    folder = root / _TORCHVISION_FOLDER
    parts = []
    for name in _BATCH_FILES[split]:
        path = folder / name
        if not path.is_file():
            raise _missing_data_error(root, split, f"'{folder}' exists but lacks the batch file '{name}'")
        parts.append(_read_batch_file(path))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _download_torchvision(root: Path, split: str) -> tuple[Tensor, Tensor]:
    from torchvision.datasets import CIFAR10

    dataset = CIFAR10(str(root), train=split == "train", download=True)
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    return images, torch.as_tensor(dataset.targets, dtype=torch.int64)


def _sorted_images(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:  # scandir: no extra stat per file (50,000 files list in well under a second)
        names = [
            e.name
            for e in entries
            if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in _IMAGE_SUFFIXES and e.is_file()
        ]
    stems = [os.path.splitext(name)[0] for name in names]
    if names and all(re.fullmatch(r"[0-9]+", stem) for stem in stems):
        names = [name for _, name in sorted(zip((int(s) for s in stems), names, strict=True))]
    else:
        names.sort()
    return [folder / name for name in names]


def _list_image_folders(
    root: Path, split: str, classes: list[int] | None, per_class: int | None
) -> tuple[list[Path], Tensor]:
    """The image files of ``root/split`` (class-major), restricted to the requested subset, and their labels."""
    split_dir = root / split
    class_dirs = sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise _missing_data_error(root, split, f"'{split_dir}' holds no class folders")
    names = [d.name for d in class_dirs]
    if all(name in CIFAR10_CLASSES for name in names):
        indices = [CIFAR10_CLASSES.index(name) for name in names]
    else:
        indices = list(range(len(names)))
    if classes is not None:
        unknown = [c for c in classes if c not in indices]
        if unknown:
            raise ValueError(
                f"`classes` holds indices {unknown} absent from the data, whose classes are {sorted(indices)} "
                f"(folders {names} in '{split_dir}')"
            )
    files: list[Path] = []
    labels: list[int] = []
    for folder, index in zip(class_dirs, indices, strict=True):
        if classes is not None and index not in classes:
            continue
        found = _sorted_images(folder)
        if per_class is not None:
            if len(found) < per_class:
                raise ValueError(
                    f"`per_class`={per_class} exceeds the {len(found)} images of class {index} ('{folder}')"
                )
            found = found[:per_class]
        files.extend(found)
        labels.extend([index] * len(found))
    if not files:
        raise _missing_data_error(root, split, f"the class folders of '{split_dir}' hold no .png/.jpg images")
    return files, torch.as_tensor(labels, dtype=torch.int64)


def _decode_files(files: Sequence[Path], split: str, progress: bool) -> Tensor:
    import numpy as np
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    images = torch.empty((len(files), 3, _SIDE, _SIDE), dtype=torch.uint8)
    for i, path in enumerate(tqdm(files, desc=f"CIFAR-10 {split}", unit="img", disable=not progress)):
        raw = path.read_bytes()  # file-system errors propagate as they are
        try:
            with Image.open(io.BytesIO(raw)) as image:
                mode, size = image.mode, image.size
                pixels = np.array(image) if (mode, size) == ("RGB", (_SIDE, _SIDE)) else None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise ValueError(f"image file '{path}' could not be decoded: {error}") from error
        if pixels is None:
            raise ValueError(
                f"image file '{path}' must be a 32x32 RGB image, got a {size[0]}x{size[1]} image in PIL mode '{mode}'"
            )
        images[i] = torch.from_numpy(pixels).permute(2, 0, 1)
    return images


def _check_classes(classes: Any) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, str | bytes) or not isinstance(classes, Sequence):
        raise TypeError(f"`classes` must be a sequence of class indices or None, got {describe(classes)}")
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


def load_cifar10(
    root: str | os.PathLike[str],
    split: Literal["train", "test"] = "train",
    *,
    download: bool = False,
    progress: bool = True,
    classes: Sequence[int] | None = None,
    per_class: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Load a CIFAR-10 split as one ``uint8`` image tensor and its labels.

    Sources, in order of preference:

    1. ``download=True``: ``torchvision.datasets.CIFAR10(root, download=True)`` fetches the archive into
       ``root/cifar-10-batches-py`` if it is not already there (checking its MD5 sums; needs internet) and its
       arrays are used.
    2. ``root/cifar-10-batches-py`` (torchvision's layout): the pickled batch files are read directly, with an
       unpickler that only accepts numpy arrays. torchvision itself is not used here because
       ``CIFAR10(download=False)`` insists on the MD5 sums of the original files, which rejects any re-packed or
       test copy; no checksum is verified on this path.
    3. ``root/{split}/<class>/*.png|jpg|jpeg`` (image folders, e.g. written by
       ``python ../shared/data/cifar10/unpack.py <root>``). Each class folder becomes a label: its index in
       [`CIFAR10_CLASSES`][hmdc_modules.condensation.data.CIFAR10_CLASSES] when every folder name is a CIFAR-10 class
       name (so a
       tree holding only ``cat/`` and ``ship/`` gives labels 3 and 8), otherwise its position in the sorted folder
       names. Within a class, files are sorted numerically when every stem is an integer (``2.png`` before
       ``10.png``), else by name; hidden files and other extensions are ignored. Images are decoded once, with a
       progress bar.

    ``classes`` and ``per_class`` restrict the result to a subset (for tiny CPU runs): the samples of the listed
    classes, at most the first ``per_class`` of each (in source order). Labels keep their original class indices
    (``classes=[3, 8]`` gives labels 3 and 8, not 0 and 1), and the samples keep their source order (the
    interleaved order of the batch files; class by class for image folders). With image folders only the selected
    files are decoded.

    Args:
        root: The data folder (holding ``cifar-10-batches-py`` or ``train``/``test``).
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        download: Whether to let torchvision download the data (needs internet).
        progress: Whether to show a progress bar while decoding image files.
        classes: Class indices to keep; ``None`` keeps all.
        per_class: Keep only the first ``per_class`` images of each kept class; ``None`` keeps all.

    Returns:
        ``(images, labels)``: ``images`` ``uint8`` in NCHW order (RGB), ``labels`` ``int64`` class indices.

    Raises:
        FileNotFoundError: If neither layout is found under ``root`` (the message names ``root`` and both ways to
            get the data) or a batch file is missing.
        ValueError: If an image is not a 32x32 8-bit RGB image (the message names the file), a batch file is not a
            CIFAR batch, ``split`` is unknown, ``classes`` names a class absent from the data or repeats one, or a
            class has fewer than ``per_class`` images.
        TypeError: If an argument has the wrong type.

    Shape:
        - output images: $(N, 3, 32, 32)$, ``torch.uint8``
        - output labels: $(N,)$, ``torch.int64``

    Examples:
        >>> images, labels = load_cifar10("data/cifar10", "test", classes=[3], per_class=8)  # doctest: +SKIP
        >>> images.shape, labels.tolist()  # doctest: +SKIP
        (torch.Size([8, 3, 32, 32]), [3, 3, 3, 3, 3, 3, 3, 3])
    """
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"`root` must be a str or path, got {describe(root)}")
    check_choice("split", split, ("train", "test"))
    for name, flag in (("download", download), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"`{name}` must be a bool, got {describe(flag)}")
    selected_classes = _check_classes(classes)
    if per_class is not None:
        check_positive_int("per_class", per_class)
    root = Path(root).expanduser()

    if download:
        images, labels = _download_torchvision(root, split)
    elif (root / _TORCHVISION_FOLDER).is_dir():
        images, labels = _read_torchvision_layout(root, split)
    elif (root / split).is_dir():
        files, labels = _list_image_folders(root, split, selected_classes, per_class)
        return _decode_files(files, split, progress), labels
    else:
        raise _missing_data_error(root, split, "neither layout is there")

    keep = _select(labels, selected_classes, per_class)
    if keep is not None:
        images, labels = images[keep], labels[keep]
    return images.contiguous(), labels


# --------------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------------


def _channel_stats(name: str, values: Any, channels: int, like: Tensor, *, positive: bool = False) -> Tensor:
    if isinstance(values, Tensor):
        if values.ndim != 1:
            raise ValueError(f"`{name}` must be a 1-D tensor or a sequence of numbers, got shape {tuple(values.shape)}")
        values = values.tolist()
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"`{name}` must be a sequence of {channels} numbers, got {describe(values)}")
    if len(values) != channels or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ValueError(f"`{name}` must hold one number per channel ({channels}), got {list(values)!r}")
    if positive and not all(v > 0 for v in values):
        raise ValueError(f"`{name}` must be > 0 in every channel, got {list(values)!r}")
    return torch.tensor([float(v) for v in values], dtype=like.dtype, device=like.device).reshape(channels, 1, 1)


def normalize(
    images: Tensor,
    mean: Sequence[float] | Tensor = CIFAR10_MEAN,
    std: Sequence[float] | Tensor = CIFAR10_STD,
) -> Tensor:
    r"""Standardise images channel by channel: $(x - \mu_c) / \sigma_c$.

    ``uint8`` images are first scaled to $[0, 1]$ (divided by 255, as ``float32``); floating images are taken to be
    in $[0, 1]$ already (not checked) and keep their dtype. The result is on the device of ``images`` and, for
    floating input, differentiable.

    Args:
        images: Pixels, channels at dimension $-3$.
        mean: Per-channel mean $\mu$ (default: CIFAR-10's).
        std: Per-channel standard deviation $\sigma > 0$ (default: CIFAR-10's).

    Returns:
        The standardised images.

    Raises:
        TypeError: If ``images`` is not a tensor of dtype ``uint8`` or floating, or ``mean``/``std`` is not a
            sequence of numbers.
        ValueError: If ``images`` has fewer than 3 dimensions, or ``mean``/``std`` does not have one entry per
            channel, or ``std`` is not positive.

    Shape:
        - images: $(*, C, H, W)$
        - output: same shape

    Examples:
        >>> x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
        >>> normalize(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).unique()
        tensor([1.])
    """
    check_tensor("images", images)
    if images.ndim < 3:
        raise ValueError(f"`images` must have at least 3 dimensions (*, C, H, W), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.to(torch.float32) / 255.0
    elif not images.is_floating_point():
        raise TypeError(f"`images` must have dtype uint8 or a floating dtype, got {images.dtype}")
    channels = images.shape[-3]
    m = _channel_stats("mean", mean, channels, images)
    s = _channel_stats("std", std, channels, images, positive=True)
    return (images - m) / s


def denormalize(
    x: Tensor,
    mean: Sequence[float] | Tensor = CIFAR10_MEAN,
    std: Sequence[float] | Tensor = CIFAR10_STD,
) -> Tensor:
    r"""Undo [`normalize`][hmdc_modules.condensation.data.normalize]: $x \sigma_c + \mu_c$ (pixels in $[0, 1]$, not
    clamped).

    Args:
        x: Standardised images, floating point, channels at dimension $-3$.
        mean: Per-channel mean $\mu$ used for normalising (default: CIFAR-10's).
        std: Per-channel standard deviation $\sigma > 0$ (default: CIFAR-10's).

    Returns:
        The images in pixel space, same dtype and device as ``x``.

    Raises:
        TypeError: If ``x`` is not a floating tensor or ``mean``/``std`` is not a sequence of numbers.
        ValueError: If ``x`` has fewer than 3 dimensions, ``mean``/``std`` does not have one entry per channel, or
            ``std`` is not positive.

    Shape:
        - x: $(*, C, H, W)$
        - output: same shape

    Examples:
        >>> pixels = torch.rand(2, 3, 4, 4)
        >>> torch.allclose(denormalize(normalize(pixels)), pixels, atol=1e-6)
        True
    """
    check_tensor("x", x, floating=True)
    if x.ndim < 3:
        raise ValueError(f"`x` must have at least 3 dimensions (*, C, H, W), got shape {tuple(x.shape)}")
    channels = x.shape[-3]
    m = _channel_stats("mean", mean, channels, x)
    s = _channel_stats("std", std, channels, x, positive=True)
    return x * s + m


# --------------------------------------------------------------------------------------------------------------
# Synthetic-set files
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SyntheticSet:
    """A condensed set as stored by [`save_synthetic_set`][hmdc_modules.condensation.data.save_synthetic_set].

    Attributes:
        images: The stored synthetic images, normalised, still packed (multi-formation), on the CPU.
        labels: Their hard class labels (``int64``), on the CPU.
        mean: Per-channel mean of the normalisation the images are in.
        std: Per-channel standard deviation of that normalisation.
        factor: Multi-formation factor $f$ (1: no packing); decoding yields $f^2 N$ images.
        ipc: Stored images per class.
        iteration: The condensation iteration the set was saved after (for resuming).
        library_version: The ``hmdc_modules`` version that wrote the file (``"unknown"`` outside an installed
            package, ``"reference"`` for a file of the authors' implementation).
        extra: Further user values (plain Python values and tensors).
        format_version: Version of the file layout (1; 0 for a file of the authors' implementation).

    Shape:
        - images: $(N, C, H, W)$
        - labels: $(N,)$

    Examples:
        >>> synthetic = read_synthetic_set("runs/hmdc_cifar10/synthetic.pt")  # doctest: +SKIP
        >>> synthetic.images.shape, synthetic.labels.shape, synthetic.factor, synthetic.iteration  # doctest: +SKIP
        (torch.Size([100, 3, 32, 32]), torch.Size([100]), 2, 99)
    """

    images: Tensor
    labels: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    factor: int
    ipc: int
    iteration: int
    library_version: str = "unknown"
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = _FORMAT_VERSION


def _library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hmdc_modules")
    except PackageNotFoundError:
        return "unknown"


def _plain(name: str, value: Any) -> Any:
    """Check that ``value`` is storable with ``weights_only`` loading; tensors are detached and moved to the CPU."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, list | tuple):
        items = [_plain(f"{name}[{i}]", v) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"`{name}` keys must be str, got {describe(key)}")
            result[key] = _plain(f"{name}[{key!r}]", item)
        return result
    raise TypeError(
        f"`{name}` must hold only tensors, None, bool, int, float, str, lists, tuples and dicts, got {describe(value)}"
    )


def save_synthetic_set(
    path: str | os.PathLike[str],
    images: Tensor,
    labels: Tensor,
    *,
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    factor: int,
    ipc: int,
    iteration: int,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Save a synthetic set atomically, as a dictionary that ``torch.load(..., weights_only=True)`` can read.

    The file holds only tensors and plain Python values: ``format`` (``"hmdc_modules.synthetic_set"``),
    ``format_version``, ``images``, ``labels``, ``mean``, ``std``, ``factor``, ``ipc``, ``iteration``,
    ``library_version`` and ``extra``. Tensors are detached, copied and moved to the CPU. The dictionary is written
    to a temporary file in the destination folder, flushed to disk and renamed over ``path``, so a crash never
    leaves a half-written file and an existing file stays intact until the new one is complete. Missing parent
    folders are created.

    Args:
        path: Destination file (conventionally ``*.pt``).
        images: The synthetic images in normalised space, still packed (multi-formation), floating point.
        labels: Their integer class labels.
        mean: Per-channel mean of the normalisation ``images`` are in.
        std: Per-channel standard deviation of that normalisation.
        factor: Multi-formation factor $f \\ge 1$; $H$ and $W$ must be divisible by it.
        ipc: Stored images per class ($\\ge 1$).
        iteration: The condensation iteration just completed ($\\ge 0$).
        extra: Further values to keep (str keys; tensors, None, bool, int, float, str, lists, tuples, dicts).

    Raises:
        TypeError: If an argument has the wrong type (including a value in ``extra`` that ``weights_only`` loading
            could not read).
        ValueError: If ``images`` is not 4-D, empty or not finite, ``labels`` is not 1-D or does not match its
            batch size, ``mean``/``std`` does not have one entry per channel, $H$ or $W$ is not divisible by
            ``factor``, or an integer is out of range.
        OSError: If the file cannot be written (any temporary file is removed).

    Shape:
        - images: $(N, C, H, W)$
        - labels: $(N,)$

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> save_synthetic_set(folder / "set.pt", torch.zeros(4, 3, 32, 32), torch.tensor([0, 0, 1, 1]),
        ...                    mean=CIFAR10_MEAN, std=CIFAR10_STD, factor=2, ipc=2, iteration=0)
        >>> read_synthetic_set(folder / "set.pt").factor
        2
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a str or path, got {describe(path)}")
    check_tensor("images", images, ndim=4, floating=True, nonempty=True)
    check_tensor("labels", labels, ndim=1)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"`labels` must have an integer dtype, got {labels.dtype}")
    check_same_batch(("images", "labels"), images, labels)
    check_finite("images", images)
    channels, height, width = images.shape[1:]
    mean_values = _channel_stats("mean", mean, channels, images).flatten().tolist()
    std_values = _channel_stats("std", std, channels, images, positive=True).flatten().tolist()
    check_positive_int("factor", factor)
    if height % factor != 0 or width % factor != 0:
        raise ValueError(
            f"`images` height and width must be divisible by `factor`={factor}, got spatial size ({height}, {width})"
        )
    check_positive_int("ipc", ipc)
    check_positive_int("iteration", iteration, minimum=0)
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"`extra` must be a dict or None, got {describe(extra)}")
    payload = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "images": images.detach().cpu().clone(),
        "labels": labels.detach().cpu().to(torch.int64).clone(),
        "mean": [float(v) for v in mean_values],
        "std": [float(v) for v in std_values],
        "factor": int(factor),
        "ipc": int(ipc),
        "iteration": int(iteration),
        "library_version": _library_version(),
        "extra": _plain("extra", dict(extra) if extra is not None else {}),
    }
    atomic_torch_save(payload, Path(path))


class SyntheticSetError(FileFormatError):
    """A file is not a usable synthetic set (one line naming the file, what was wrong and what was expected)."""


def _not_a_set(path: Path, why: str) -> SyntheticSetError:
    return SyntheticSetError(f"`path` '{path}' is not a synthetic-set file: {why}")


def _from_reference(path: Path, content: dict[str, Any]) -> SyntheticSet:
    """Convert the authors' ``synthetic_images.pth`` dictionary (images ``[C, IPC, 3, H, W]``, no labels)."""
    stored = content["synthetic_images"]
    if not isinstance(stored, Tensor) or stored.ndim != 5 or not stored.is_floating_point():
        raise _not_a_set(
            path, f"'synthetic_images' must be a floating (C, IPC, 3, H, W) tensor, got {describe(stored)}"
        )
    num_classes, ipc = stored.shape[:2]
    return SyntheticSet(
        images=stored.reshape(num_classes * ipc, *stored.shape[2:]).clone(),
        labels=torch.arange(num_classes, dtype=torch.int64).repeat_interleave(ipc),
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        factor=int(content["factor"]),
        ipc=int(content["n_ipc"]),
        iteration=int(content["iteration"]),
        library_version="reference",
        extra={"init": content.get("init")},
        format_version=0,
    )


def _expect(path: Path, content: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = content[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _not_a_set(path, f"'{key}' must be {what}, got {describe(value)}")
    return value


def read_synthetic_set(path: str | os.PathLike[str]) -> SyntheticSet:
    """Read a file written by [`save_synthetic_set`][hmdc_modules.condensation.data.save_synthetic_set] (images still
    packed).

    The file is loaded with ``torch.load(path, map_location="cpu", weights_only=True)``, so it cannot run code.
    Files of the authors' implementation (a dictionary with ``synthetic_images`` of shape ``[C, IPC, 3, H, W]``,
    ``factor``, ``n_ipc``, ``iteration``, ``init``) are accepted too: their images are flattened class by class,
    labels are rebuilt as ``0..C-1`` repeated ``IPC`` times, ``mean``/``std`` are set to CIFAR-10's (what that
    implementation normalises with) and ``extra`` holds ``init``.

    Args:
        path: The file to read.

    Returns:
        A [`SyntheticSet`][hmdc_modules.condensation.data.SyntheticSet] with every stored field.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a synthetic set (unreadable with ``weights_only=True``, not a dictionary,
            missing keys, values of the wrong type or shape, or a newer format version); the message says which.

    Shape:
        - output images: $(N, C, H, W)$; output labels: $(N,)$

    Examples:
        >>> synthetic = read_synthetic_set("runs/hmdc_cifar10/synthetic.pt")  # doctest: +SKIP
        >>> synthetic.images.shape, synthetic.factor  # doctest: +SKIP
        (torch.Size([100, 3, 32, 32]), 2)
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a str or path, got {describe(path)}")
    path = Path(path)
    content = load_torch_file(
        path, what="synthetic-set", hint="write it again with save_synthetic_set", error=SyntheticSetError
    )
    if not isinstance(content, dict):
        raise _not_a_set(path, f"expected a dict, found {describe(content)}")
    if content.get("format") != _FORMAT:
        if all(key in content for key in _REFERENCE_KEYS):
            return _from_reference(path, content)
        raise _not_a_set(path, f"no 'format' marker {_FORMAT!r}; keys found: {sorted(map(str, content))}")
    version = _expect(path, content, "format_version", int, "an int") if "format_version" in content else 0
    if version > _FORMAT_VERSION:
        raise _not_a_set(
            path, f"format_version {version} is newer than this library reads ({_FORMAT_VERSION}); upgrade hmdc_modules"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in content]
    if missing:
        raise _not_a_set(path, f"missing keys {missing}")
    images = _expect(path, content, "images", Tensor, "a tensor")
    labels = _expect(path, content, "labels", Tensor, "a tensor")
    if images.ndim != 4 or not images.is_floating_point():
        raise _not_a_set(path, f"'images' must be a floating (N, C, H, W) tensor, got {describe(images)}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
        raise _not_a_set(
            path, f"'labels' must be an integer (N,) tensor with N = {images.shape[0]}, got {describe(labels)}"
        )
    stats = {}
    for key in ("mean", "std"):
        values = _expect(path, content, key, (list, tuple), "a list of floats")
        if len(values) != images.shape[1] or not all(isinstance(v, int | float) for v in values):
            raise _not_a_set(path, f"'{key}' must hold {images.shape[1]} numbers, got {values!r}")
        stats[key] = tuple(float(v) for v in values)
    extra = content.get("extra", {})
    if not isinstance(extra, dict):
        raise _not_a_set(path, f"'extra' must be a dict, got {describe(extra)}")
    library_version = content.get("library_version", "unknown")
    numbers = {}
    for key, minimum in (("factor", 1), ("ipc", 1), ("iteration", 0)):
        numbers[key] = _expect(path, content, key, int, "an int")
        if numbers[key] < minimum:
            raise _not_a_set(path, f"'{key}' must be >= {minimum}, got {numbers[key]}")
    if images.shape[2] % numbers["factor"] or images.shape[3] % numbers["factor"]:
        raise _not_a_set(path, f"image size {tuple(images.shape[2:])} is not divisible by factor {numbers['factor']}")
    return SyntheticSet(
        images=images,
        labels=labels.to(torch.int64),
        mean=stats["mean"],
        std=stats["std"],
        factor=numbers["factor"],
        ipc=numbers["ipc"],
        iteration=numbers["iteration"],
        library_version=str(library_version),
        extra=extra,
        format_version=version,
    )


def load_synthetic_set(
    path: str | os.PathLike[str], *, decoded: bool = True, denormalized: bool = False
) -> TensorDataset:
    """Load a synthetic set as a ``TensorDataset`` of ``(image, label)`` pairs, ready for training.

    Args:
        path: A file written by [`save_synthetic_set`][hmdc_modules.condensation.data.save_synthetic_set] (or the
        authors'
            implementation, see [`read_synthetic_set`][hmdc_modules.condensation.data.read_synthetic_set]).
        decoded: Unpack multi-formation images with
            [`decode_formation`][hmdc_modules.condensation.formation.decode_formation] at the stored factor (every tile
            resized
            back to the stored size) and repeat the labels to match
            ([`decode_formation_labels`][hmdc_modules.condensation.formation.decode_formation_labels]). ``False``
            returns the
            stored, packed images.
        denormalized: Map the images back to pixel space $[0, 1]$ with the stored mean and std (not clamped).
            ``False`` keeps them normalised, as the training code expects.

    Returns:
        ``TensorDataset(images, labels)`` on the CPU.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a synthetic set.

    Shape:
        - images: $(f^2 N, C, H, W)$ when ``decoded`` (factor $f$), else $(N, C, H, W)$
        - labels: $(f^2 N,)$ when ``decoded``, else $(N,)$

    Examples:
        >>> dataset = load_synthetic_set("runs/hmdc_cifar10/synthetic.pt")  # doctest: +SKIP
        >>> loader = torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True)  # doctest: +SKIP
    """
    for name, flag in (("decoded", decoded), ("denormalized", denormalized)):
        if not isinstance(flag, bool):
            raise TypeError(f"`{name}` must be a bool, got {describe(flag)}")
    synthetic = read_synthetic_set(path)
    images, labels = synthetic.images, synthetic.labels
    if decoded:
        from hmdc_modules.condensation.formation import decode_formation, decode_formation_labels

        images = decode_formation(images, synthetic.factor)
        labels = decode_formation_labels(labels, synthetic.factor)
    if denormalized:
        images = denormalize(images, synthetic.mean, synthetic.std)
    return TensorDataset(images, labels)

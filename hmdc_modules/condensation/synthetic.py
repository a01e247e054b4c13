"""The synthetic-set file format: a condensed set stored as a plain dictionary of tensors and Python values.

[`save_synthetic_set`][hmdc_modules.condensation.synthetic.save_synthetic_set] writes it atomically,
[`read_synthetic_set`][hmdc_modules.condensation.synthetic.read_synthetic_set] reads every stored field back (with
``torch.load(..., weights_only=True)``, so a file cannot run code) and
[`load_synthetic_set`][hmdc_modules.condensation.synthetic.load_synthetic_set] returns a training-ready
``TensorDataset``. An unusable file gives one line naming it (a
[`SyntheticSetError`][hmdc_modules.condensation.synthetic.SyntheticSetError]).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from hmdc_modules._validation import check_finite, check_positive_int, check_same_batch, check_tensor, describe
from hmdc_modules.condensation.datasets import CIFAR10_MEAN, CIFAR10_STD
from hmdc_modules.condensation.io import FileFormatError, atomic_torch_save, load_torch_file
from hmdc_modules.condensation.normalization import _channel_stats, denormalize

__all__ = ["SyntheticSet", "SyntheticSetError", "load_synthetic_set", "read_synthetic_set", "save_synthetic_set"]

_FORMAT = "hmdc_modules.synthetic_set"
_FORMAT_VERSION = 1
_REQUIRED_KEYS = ("images", "labels", "mean", "std", "factor", "ipc", "iteration")
_REFERENCE_KEYS = ("synthetic_images", "factor", "n_ipc", "iteration")


class SyntheticSetError(FileFormatError):
    """A file is not a usable synthetic set (one line naming the file, what was wrong and what was expected)."""


@dataclass(frozen=True, eq=False)
class SyntheticSet:
    """A condensed set as stored by [`save_synthetic_set`][hmdc_modules.condensation.synthetic.save_synthetic_set].

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
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "synthetic.pt"
        >>> save_synthetic_set(path, torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]), mean=CIFAR10_MEAN,
        ...                    std=CIFAR10_STD, factor=2, ipc=1, iteration=9)
        >>> synthetic = read_synthetic_set(path)
        >>> synthetic.images.shape, synthetic.labels.shape, synthetic.factor, synthetic.iteration
        (torch.Size([2, 3, 8, 8]), torch.Size([2]), 2, 9)
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
    """Read a file written by [`save_synthetic_set`][hmdc_modules.condensation.synthetic.save_synthetic_set].

    The images come back still packed (multi-formation).

    The file is loaded with ``torch.load(path, map_location="cpu", weights_only=True)``, so it cannot run code.
    Files of the authors' implementation (a dictionary with ``synthetic_images`` of shape ``[C, IPC, 3, H, W]``,
    ``factor``, ``n_ipc``, ``iteration``, ``init``) are accepted too: their images are flattened class by class,
    labels are rebuilt as ``0..C-1`` repeated ``IPC`` times, ``mean``/``std`` are set to CIFAR-10's (what that
    implementation normalises with) and ``extra`` holds ``init``.

    Args:
        path: The file to read.

    Returns:
        A [`SyntheticSet`][hmdc_modules.condensation.synthetic.SyntheticSet] with every stored field.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a synthetic set (unreadable with ``weights_only=True``, not a dictionary,
            missing keys, values of the wrong type or shape, or a newer format version); the message says which.

    Shape:
        - output images: $(N, C, H, W)$; output labels: $(N,)$

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "synthetic.pt"
        >>> save_synthetic_set(path, torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]), mean=CIFAR10_MEAN,
        ...                    std=CIFAR10_STD, factor=2, ipc=1, iteration=9)
        >>> synthetic = read_synthetic_set(path)
        >>> synthetic.images.shape, synthetic.labels.tolist(), synthetic.ipc
        (torch.Size([2, 3, 8, 8]), [0, 1], 1)
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
        path: A file written by [`save_synthetic_set`][hmdc_modules.condensation.synthetic.save_synthetic_set]
            (or the authors' implementation, see
            [`read_synthetic_set`][hmdc_modules.condensation.synthetic.read_synthetic_set]).
        decoded: Unpack multi-formation images with
            [`decode_formation`][hmdc_modules.condensation.formation.decode_formation] at the stored factor (every tile
            resized back to the stored size) and repeat the labels to match
            ([`decode_formation_labels`][hmdc_modules.condensation.formation.decode_formation_labels]). ``False``
            returns the stored, packed images.
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
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "synthetic.pt"
        >>> save_synthetic_set(path, torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]), mean=CIFAR10_MEAN,
        ...                    std=CIFAR10_STD, factor=2, ipc=1, iteration=9)
        >>> images, labels = load_synthetic_set(path).tensors  # each image decodes to 2 x 2 images
        >>> images.shape, labels.tolist()
        (torch.Size([8, 3, 8, 8]), [0, 1, 0, 1, 0, 1, 0, 1])
        >>> loader = torch.utils.data.DataLoader(load_synthetic_set(path), batch_size=4, shuffle=True)
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

"""Image folders ``<split>/<class>/*.{png,jpg,jpeg}``: listing class folders and files, decoding into one tensor."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


def class_folders(split_dir: Path) -> list[Path]:
    """The visible sub-folders of ``split_dir``, sorted by name (one per class)."""
    return sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def sorted_images(folder: Path) -> list[Path]:
    """Image files of ``folder``: numeric order when every stem is an integer, else by name; hidden files skipped."""
    with os.scandir(folder) as entries:  # scandir: no extra stat per file (50,000 files list in well under a second)
        names = [
            e.name
            for e in entries
            if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()
        ]
    stems = [os.path.splitext(name)[0] for name in names]
    if names and all(re.fullmatch(r"[0-9]+", stem) for stem in stems):
        names = [name for _, name in sorted(zip((int(s) for s in stems), names, strict=True))]
    else:
        names.sort()
    return [folder / name for name in names]


def select_files(
    folders: Sequence[Path], indices: Sequence[int], classes: list[int] | None, per_class: int | None
) -> tuple[list[Path], Tensor]:
    """The files of the requested classes (class-major, at most ``per_class`` each) and their labels."""
    if classes is not None:
        unknown = [c for c in classes if c not in indices]
        if unknown:
            raise ValueError(
                f"`classes` holds indices {unknown} absent from the data, whose classes are {sorted(indices)} "
                f"(folders {[f.name for f in folders]} in '{folders[0].parent}')"
            )
    files: list[Path] = []
    labels: list[int] = []
    for folder, index in zip(folders, indices, strict=True):
        if classes is not None and index not in classes:
            continue
        found = sorted_images(folder)
        if per_class is not None:
            if len(found) < per_class:
                raise ValueError(
                    f"`per_class`={per_class} exceeds the {len(found)} images of class {index} ('{folder}')"
                )
            found = found[:per_class]
        files.extend(found)
        labels.extend([index] * len(found))
    return files, torch.as_tensor(labels, dtype=torch.int64)


def _read_rgb(path: Path) -> tuple[str, tuple[int, int], object]:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    raw = path.read_bytes()  # file-system errors propagate as they are (they name the file)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            mode, size = image.mode, image.size
            pixels = np.array(image) if mode == "RGB" else None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"image file '{path}' could not be decoded: {error}") from None
    return mode, size, pixels


def decode_files(files: Sequence[Path], description: str, progress: bool, size: tuple[int, int] | None) -> Tensor:
    """Decode RGB images of one size (``size`` as (width, height), or the first file's) into uint8 NCHW."""
    from tqdm.auto import tqdm

    images: Tensor | None = None
    for i, path in enumerate(tqdm(files, desc=description, unit="img", disable=not progress)):
        mode, found, pixels = _read_rgb(path)
        if size is None:
            size = found
        if pixels is None or found != size:
            raise ValueError(
                f"image file '{path}' must be a {size[0]}x{size[1]} RGB image, got a {found[0]}x{found[1]} image "
                f"in PIL mode '{mode}'; convert the folder's images to one size in RGB"
            )
        if images is None:
            images = torch.empty((len(files), 3, size[1], size[0]), dtype=torch.uint8)
        images[i] = torch.from_numpy(pixels).permute(2, 0, 1)
    if images is None:
        raise ValueError("no image files to decode")  # callers check this first; kept as a clear message anyway
    return images

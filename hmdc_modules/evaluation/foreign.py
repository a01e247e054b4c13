"""Condensed sets saved by other tools: detected or named, read into the library's
[`SyntheticSet`][hmdc_modules.condensation.synthetic.SyntheticSet].

The formats ([`SET_FORMATS`][hmdc_modules.evaluation.foreign.SET_FORMATS]):

- ``hmdc``: this library's ``synthetic.pt`` (images, labels, mean/std, multi-formation factor; the normalisation
  is recorded in the file).
- ``hmdc-reference``: the HMDC authors' ``synthetic_images.pth`` (``synthetic_images`` of shape
  ``(C, IPC, 3, H, W)``, ``factor``, ``n_ipc``; normalised with the CIFAR-10 mean/std that code uses).
- ``dc``: DC, DSA and DM's ``res_<method>_<dataset>_<model>_<ipc>ipc.pt``, a dict ``{"data": [[images, labels],
  ...], "accs_all_exps": ...}`` with one pair per experiment (``entry`` picks one; the first by default); normalised
  with DC's CIFAR-10 mean/std, the only one those codes use.
- ``mtt``: MTT-style ``images_<tag>.pt`` (an image tensor) with ``labels_<tag>.pt`` beside it (hard labels, or
  soft labels as DATM learns them) and, when present, ``lr_<tag>.pt`` (the learned synthetic learning rate);
  MTT, FTD and DATM write ``images_best.pt``/``labels_best.pt``. The normalisation must be stated: MTT saves
  ZCA-whitened images when run with ``--zca``.
- ``idc``: IDC and DREAM's ``data.pt``, a pair ``[images, labels]`` with the images packed by multi-formation;
  the normalisation and the factor must be stated (IDC and DREAM use factor 2 on CIFAR-10).
- ``tensor``: any ``.pt`` holding a bare image tensor (labels from ``labels=``), a dict with ``images``/``labels``
  keys (or ``x``/``y``, ``image_syn``/``label_syn``, ...), or a pair ``(images, labels)``; the normalisation must be
  stated. Never detected: name it.

Normalisations ([`NORMALIZATIONS`][hmdc_modules.evaluation.foreign.NORMALIZATIONS]): ``"dc"`` (mean 0.4914,
0.4822, 0.4465; std 0.2023, 0.1994, 0.2010: DC/DSA/DM/MTT/DD-Ranking), ``"imagenet"`` (0.485, 0.456, 0.406;
0.229, 0.224, 0.225), ``"none"`` (pixels in $[0, 1]$), or ``"M1,M2,M3/S1,S2,S3"``. ``"zca"`` is recognised and
refused: the test images would have to be whitened with the same transform, which the file does not hold. A
format whose file does not say how its images are normalised needs one, else one error line says so: nothing is
guessed.

Labels: a 1-D integer (or integral float) tensor is hard labels. A 2-D float tensor is soft labels (learned, as
DATM's): probabilities are used as they are, logits only with ``soft_labels="logits"`` (softmax), and the hard
labels the suite reports by are their argmax. A learned learning rate (``lr_best.pt`` beside MTT-style images) is
kept in ``extra["learned_lr"]``; the evaluation trains with it unless told not to.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hmdc_modules._validation import check_positive_int, describe

__all__ = [
    "NORMALIZATIONS",
    "SET_FORMATS",
    "ForeignSetError",
    "SetSource",
    "detect_set_format",
    "read_any_set",
    "resolve_normalization",
]

SET_FORMATS: tuple[str, ...] = ("auto", "hmdc", "hmdc-reference", "dc", "mtt", "idc", "tensor")
"""The set formats; ``"auto"`` detects one of the others from the file."""

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "dc": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
"""Named normalisations: ``(mean, std)`` per RGB channel, for pixels scaled to $[0, 1]$."""

_IMAGE_KEYS = ("images", "image", "x", "data", "image_syn", "images_syn")
_LABEL_KEYS = ("labels", "label", "y", "targets", "target", "label_syn", "labels_syn")
_MTT_IMAGES = re.compile(r"images_(.+)\.pt")


class ForeignSetError(ValueError):
    """A set file cannot be read as the format it was detected or named as (one line naming the file)."""


@dataclass(frozen=True)
class SetSource:
    """How to read a set file.

    Args:
        format: One of [`SET_FORMATS`][hmdc_modules.evaluation.foreign.SET_FORMATS] (``"auto"``: detect it).
        normalization: How the stored images are normalised (see
            [`NORMALIZATIONS`][hmdc_modules.evaluation.foreign.NORMALIZATIONS]); required for ``mtt``, ``idc`` and
            ``tensor`` files, and overrides what the other formats imply.
        labels: A file holding the label tensor (for a bare image tensor).
        entry: Which experiment of a DC/DSA/DM ``res_*.pt`` file (0-based; ``None``: the first).
        factor: The multi-formation factor of an IDC/DREAM ``data.pt`` (required there) or a ``tensor`` file
            (``None``: 1).
        soft_labels: ``"auto"`` (2-D labels must be probabilities), ``"probs"`` or ``"logits"`` (softmax first).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a name is unknown or a number out of range.

    Examples:
        >>> SetSource().format, SetSource("mtt", normalization="dc").to_dict()["normalization"]
        ('auto', 'dc')
    """

    format: str = "auto"
    normalization: str | None = None
    labels: str | None = None
    entry: int | None = None
    factor: int | None = None
    soft_labels: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.format, str):
            raise TypeError(f"`format` must be a str, got {describe(self.format)}")
        if self.format not in SET_FORMATS:
            raise ValueError(f"`format` must be one of {SET_FORMATS}, got {self.format!r}")
        if self.normalization is not None:
            resolve_normalization(self.normalization)
        if self.labels is not None:
            if not isinstance(self.labels, str | os.PathLike):
                raise TypeError(f"`labels` must be a path or None, got {describe(self.labels)}")
            object.__setattr__(self, "labels", os.fspath(self.labels))
        if self.entry is not None:
            check_positive_int("entry", self.entry, minimum=0)
        if self.factor is not None:
            check_positive_int("factor", self.factor)
        if self.soft_labels not in ("auto", "probs", "logits"):
            raise ValueError(f"`soft_labels` must be 'auto', 'probs' or 'logits', got {self.soft_labels!r}")

    def to_dict(self) -> dict[str, Any]:
        """The options as plain JSON values."""
        return asdict(self)


def resolve_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a normalisation name or ``"M1,M2,M3/S1,S2,S3"``.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If it is ``"zca"`` (not supported: say why) or neither a known name nor two lists of numbers.

    Examples:
        >>> resolve_normalization("none")
        ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        >>> resolve_normalization("0.5,0.5,0.5/0.25,0.25,0.25")
        ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    """
    if not isinstance(name, str):
        raise TypeError(f"`normalization` must be a str, got {describe(name)}")
    if name in NORMALIZATIONS:
        return NORMALIZATIONS[name]
    if name.lower() == "zca":
        raise ValueError(
            "`normalization` 'zca' is not supported: the test images would need the ZCA transform the set was "
            "whitened with, which the file does not hold; save the set un-whitened (MTT without --zca)"
        )
    mean_text, sep, std_text = name.partition("/")
    try:
        mean = tuple(float(v) for v in mean_text.split(","))
        std = tuple(float(v) for v in std_text.split(","))
    except ValueError:
        mean, std = (), ()
    if not sep or not mean or len(mean) != len(std) or not all(s > 0 for s in std):
        raise ValueError(
            f"`normalization` must be one of {sorted(NORMALIZATIONS)} or 'M1,M2,M3/S1,S2,S3' (std > 0), got {name!r}"
        )
    return mean, std


def _load(path: Path, what: str) -> Any:
    """The file's content, loaded with ``weights_only=True``; an unreadable file gives one ForeignSetError line."""
    from hmdc_modules.condensation import SyntheticSetError, load_torch_file

    try:
        return load_torch_file(path, what=what, hint="check the file", error=SyntheticSetError)
    except SyntheticSetError as error:
        raise ForeignSetError(str(error)) from None


def _describe_content(content: Any) -> str:
    if isinstance(content, Mapping):
        return f"a dict with keys {sorted(map(str, content))[:12]}"
    if isinstance(content, list | tuple):
        return f"a {type(content).__name__} of {len(content)} items"
    return describe(content)


def _unknown(path: Path, content: Any) -> ForeignSetError:
    return ForeignSetError(
        f"set file '{path}' is in no known format (found {_describe_content(content)}); expected this library's "
        "synthetic.pt, the HMDC authors' synthetic_images.pth, DC/DSA/DM res_*.pt, MTT images_*.pt, IDC/DREAM "
        "data.pt, or a tensor file named with --set-format tensor"
    )


def detect_set_format(path: str | os.PathLike[str], content: Any = None) -> str:
    """The format of a set file, from its name and content (see the module's table).

    Args:
        path: The file.
        content: The file's loaded content (``None``: load it, with ``weights_only=True``).

    Returns:
        ``"hmdc"``, ``"hmdc-reference"``, ``"dc"``, ``"mtt"`` or ``"idc"``. A bare tensor or an image/label dict
        is not detected: name it ``"tensor"``, stating its normalisation.

    Raises:
        ValueError: If the file is in no known format (one line naming the file and what it holds).
    """
    path = Path(path)
    if content is None:
        content = _load(path, "set")
    if isinstance(content, Mapping):
        if content.get("format") == "hmdc_modules.synthetic_set":
            return "hmdc"
        if "synthetic_images" in content:
            return "hmdc-reference"
        if isinstance(content.get("data"), list | tuple) and content["data"] and _is_pair(content["data"][0]):
            return "dc"
    if isinstance(content, Tensor) and _MTT_IMAGES.fullmatch(path.name):
        return "mtt"
    if path.name == "data.pt" and _is_pair(content):
        return "idc"
    raise _unknown(path, content)


def _is_pair(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, Tensor) for v in value)


def _sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _labels(path: Path, labels: Any, count: int, soft_mode: str) -> tuple[Tensor, Tensor | None]:
    """Hard labels and, for 2-D labels, the soft targets (probabilities)."""
    if not isinstance(labels, Tensor):
        raise ForeignSetError(f"set file '{path}': labels must be a tensor, got {describe(labels)}")
    if labels.ndim == 0 or labels.shape[0] != count or labels.ndim > 2:
        raise ForeignSetError(
            f"set file '{path}': labels must have shape ({count},) or ({count}, K), got {tuple(labels.shape)}"
        )
    if labels.ndim == 1:
        if labels.is_floating_point():
            if not torch.equal(labels, labels.round()):
                raise ForeignSetError(f"set file '{path}': 1-D labels must be whole class indices")
        hard = labels.to(torch.int64)
        if int(hard.min()) < 0:
            raise ForeignSetError(f"set file '{path}': labels must be >= 0, got {int(hard.min())}")
        return hard, None
    if not labels.is_floating_point():
        raise ForeignSetError(f"set file '{path}': 2-D labels must be floating soft labels, got {labels.dtype}")
    soft = labels.detach().to(torch.float32)
    if soft_mode == "logits":
        soft = soft.softmax(dim=1)
    else:
        is_distribution = bool((soft >= 0).all()) and torch.allclose(soft.sum(1), torch.ones(count), atol=1e-3)
        if not is_distribution:
            raise ForeignSetError(
                f"set file '{path}': the 2-D labels are not probabilities (rows must be >= 0 and sum to 1); "
                "if they are logits, pass --soft-labels logits"
            )
    return soft.argmax(dim=1), soft


def _images(path: Path, images: Any) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ForeignSetError(
            f"set file '{path}': images must be a floating (N, C, H, W) tensor, got {describe(images)}"
        )
    return images.detach().to(torch.float32)


def _need_normalization(path: Path, fmt: str, source: SetSource) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if source.normalization is None:
        raise ForeignSetError(
            f"set file '{path}' ({fmt} format) does not record how its images are normalised: state it with "
            f"--set-normalization ({', '.join(sorted(NORMALIZATIONS))}, or M1,M2,M3/S1,S2,S3)"
        )
    return resolve_normalization(source.normalization)


def _pick_dict(path: Path, content: Mapping[str, Any], keys: tuple[str, ...], what: str) -> Any:
    for key in keys:
        if key in content:
            return content[key]
    raise ForeignSetError(f"set file '{path}': no {what} key (one of {list(keys)}) in keys {sorted(map(str, content))}")


def read_any_set(path: str | os.PathLike[str], source: SetSource | None = None) -> tuple[Any, str]:
    """Read a set file of any supported format, and the SHA-256 of the bytes it was read from.

    Args:
        path: The set file (an MTT ``images_*.pt`` brings its ``labels_*.pt`` and ``lr_*.pt`` siblings).
        source: How to read it (``None``: detect the format, no options).

    Returns:
        ``(set, sha256)``. The set's images are still packed (``factor``) and normalised as stored, ``mean``/``std``
        say how; ``library_version`` is the format's name for a foreign file; ``extra`` holds ``"source"`` (the
        format, normalisation, and what was found), ``"soft_labels"`` (probabilities, when the labels are soft) and
        ``"learned_lr"`` (when the file has one). The SHA-256 covers every file read.

    Raises:
        TypeError: If ``path`` is not a path or ``source`` not a ``SetSource``.
        FileNotFoundError: If a file is missing.
        ValueError: If the file is not in the format named or in none detected, or a required option is missing
            (one line naming the file and the option).

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> torch.save(torch.rand(4, 3, 8, 8), folder / "images_best.pt")
        >>> torch.save(torch.tensor([0, 0, 1, 1]), folder / "labels_best.pt")
        >>> stored, _ = read_any_set(folder / "images_best.pt", SetSource(normalization="none"))
        >>> stored.library_version, stored.labels.tolist(), stored.mean
        ('mtt', [0, 0, 1, 1], (0.0, 0.0, 0.0))
    """
    from hmdc_modules.condensation import SyntheticSet, read_synthetic_set

    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a str or path, got {describe(path)}")
    if source is None:
        source = SetSource()
    if not isinstance(source, SetSource):
        raise TypeError(f"`source` must be a SetSource or None, got {describe(source)}")
    path = Path(path)
    content = _load(path, "set")
    fmt = source.format if source.format != "auto" else detect_set_format(path, content)
    files = [path]
    if fmt in ("hmdc", "hmdc-reference"):
        stored = read_synthetic_set(path)
        if source.normalization is not None:
            mean, std = resolve_normalization(source.normalization)
            stored = SyntheticSet(**{**stored.__dict__, "mean": mean, "std": std})
        info = {"format": fmt, "normalization": source.normalization or "recorded in the file"}
        stored.extra.setdefault("source", info)
        return stored, _sha256_of(files)

    factor, learned_lr = source.factor or 1, None
    normalization_name = source.normalization
    if fmt == "dc":
        if not isinstance(content, Mapping) or not isinstance(content.get("data"), list | tuple):
            raise ForeignSetError(f"set file '{path}' is not a DC/DSA/DM res_*.pt file (a dict with a 'data' list)")
        experiments = content["data"]
        index = source.entry or 0
        if not experiments or index >= len(experiments) or not _is_pair(experiments[index]):
            raise ForeignSetError(
                f"set file '{path}': experiment {index} is not an [images, labels] pair ({len(experiments)} in 'data')"
            )
        images, labels = experiments[index]
        normalization_name = normalization_name or "dc"
        mean, std = resolve_normalization(normalization_name)
        extra_info: dict[str, Any] = {"entry": index, "entries": len(experiments)}
    elif fmt == "mtt":
        match = _MTT_IMAGES.fullmatch(path.name)
        if match is None or not isinstance(content, Tensor):
            raise ForeignSetError(f"set file '{path}' is not an MTT images_<tag>.pt tensor file")
        images = content
        tag = match.group(1)
        label_file = Path(source.labels) if source.labels else path.with_name(f"labels_{tag}.pt")
        if not label_file.is_file():
            raise FileNotFoundError(f"set file '{path}': no labels file '{label_file}' beside it (pass --set-labels)")
        labels = _load(label_file, "label")
        files.append(label_file)
        lr_file = path.with_name(f"lr_{tag}.pt")
        if lr_file.is_file():
            value = _load(lr_file, "learned learning rate")
            if isinstance(value, Tensor) and value.numel() == 1:
                learned_lr = float(value.item())
            elif isinstance(value, int | float) and not isinstance(value, bool):
                learned_lr = float(value)
            else:
                raise ForeignSetError(f"'{lr_file}' must hold one number (a learned rate), got {describe(value)}")
            files.append(lr_file)
        mean, std = _need_normalization(path, fmt, source)
        extra_info = {"labels_file": label_file.name, "lr_file": lr_file.name if learned_lr is not None else None}
    elif fmt == "idc":
        if not _is_pair(content):
            raise ForeignSetError(f"set file '{path}' is not an IDC/DREAM data.pt ([images, labels])")
        images, labels = content
        mean, std = _need_normalization(path, fmt, source)
        if source.factor is None:
            raise ForeignSetError(
                f"set file '{path}' (idc format) stores multi-formation images: state the factor with --set-factor "
                "(IDC and DREAM use 2 on CIFAR-10; 1 for none)"
            )
        extra_info = {}
    else:  # tensor
        if isinstance(content, Tensor):
            images = content
            if source.labels is None:
                raise ForeignSetError(f"set file '{path}' holds only images: pass their labels file with --set-labels")
            labels = _load(Path(source.labels), "label")
            files.append(Path(source.labels))
        elif isinstance(content, Mapping):
            images = _pick_dict(path, content, _IMAGE_KEYS, "image")
            labels = _pick_dict(path, content, _LABEL_KEYS, "label")
        elif _is_pair(content):
            images, labels = content
        else:
            raise _unknown(path, content)
        mean, std = _need_normalization(path, fmt, source)
        extra_info = {}

    images = _images(path, images)
    if len(mean) != images.shape[1]:
        raise ForeignSetError(
            f"set file '{path}': {images.shape[1]} channels but the normalisation has {len(mean)} values"
        )
    if images.shape[2] % factor or images.shape[3] % factor:
        raise ForeignSetError(f"set file '{path}': image size {tuple(images.shape[2:])} is not divisible by {factor}")
    hard, soft = _labels(path, labels, images.shape[0], source.soft_labels)
    if soft is not None and factor != 1:
        raise ForeignSetError(
            f"set file '{path}': soft labels with multi-formation (factor {factor}) are not supported"
        )
    counts = torch.bincount(hard)
    extra: dict[str, Any] = {
        "source": {
            "format": fmt,
            "normalization": normalization_name,
            "soft_labels": soft is not None,
            "learned_lr": learned_lr,
            **extra_info,
        }
    }
    if soft is not None:
        extra["soft_labels"] = soft
    if learned_lr is not None:
        extra["learned_lr"] = learned_lr
    stored = SyntheticSet(
        images=images,
        labels=hard,
        mean=tuple(mean),
        std=tuple(std),
        factor=factor,
        ipc=int(counts[counts > 0].min()),
        iteration=0,
        library_version=fmt,
        extra=extra,
    )
    return stored, _sha256_of(files)

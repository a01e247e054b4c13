"""The unit of work of an evaluation: one (set, model, seed) cell, and the record its training produces.

[`plan_cells`][hmdc_modules.evaluation.cells.plan_cells] lists the cells of a suite in a fixed order, so that a
distributed runner can give rank $r$ of $W$ the slice ``cells[r::W]``, run each with
[`run_cell`][hmdc_modules.evaluation.training.run_cell] (a pure function of the cell and the settings) and gather
the [`CellResult`][hmdc_modules.evaluation.cells.CellResult] records.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hmdc_modules._validation import check_positive_int, describe
from hmdc_modules.evaluation.pool import ModelSpec

__all__ = ["Cell", "CellResult", "SetSpec", "file_sha256", "plan_cells", "resolve_set_path"]

_SET_FILE = "synthetic.pt"


def resolve_set_path(path: str | os.PathLike[str]) -> Path:
    """The synthetic-set file a command-line argument names: a ``.pt`` file, or a run folder's ``synthetic.pt``.

    Args:
        path: A synthetic-set file, or a folder holding ``synthetic.pt`` (what ``examples/hmdc_cifar10.py`` and
            [`make_random_real_set`][hmdc_modules.evaluation.baselines.make_random_real_set] write).

    Returns:
        The file's path.

    Raises:
        TypeError: If ``path`` is not a string or path.
        FileNotFoundError: If there is no such file, or the folder holds no ``synthetic.pt``.

    Examples:
        >>> resolve_set_path("runs/hmdc_cifar10")  # doctest: +SKIP
        PosixPath('runs/hmdc_cifar10/synthetic.pt')
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a str or path, got {describe(path)}")
    path = Path(path).expanduser()
    if path.is_dir():
        candidate = path / _SET_FILE
        if not candidate.is_file():
            raise FileNotFoundError(f"`path` '{path}' is a folder without '{_SET_FILE}': not a run folder")
        return candidate
    if not path.is_file():
        raise FileNotFoundError(f"`path` '{path}' is neither a synthetic-set file nor a run folder")
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file's bytes (identifies a set's content in the result records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class SetSpec:
    """A synthetic set to evaluate: its report name and its file.

    Args:
        name: The name in file names and per-set reports; unique within a suite.
        path: The synthetic-set file (use [`SetSpec.from_path`][hmdc_modules.evaluation.cells.SetSpec.from_path]
            for run folders).
        group: The column the set's results are pooled into in the reports (``None``: its own ``name``). Give the
            sets that one method condensed with different seeds the same group, so that the reported spread holds
            the condensation's variance as well as the evaluation's.

    Raises:
        TypeError: If ``name`` or ``group`` is not a string or ``path`` not a path.
        ValueError: If ``name`` or ``group`` is empty.

    Examples:
        >>> SetSpec("random_ipc1", "runs/random_ipc1/synthetic.pt").group
        'random_ipc1'
        >>> SetSpec("hmdc_s1", "runs/hmdc_s1/synthetic.pt", group="hmdc").group
        'hmdc'
    """

    name: str
    path: str
    group: str | None = None

    def __post_init__(self) -> None:
        for arg in ("name", "group"):
            value = getattr(self, arg)
            if arg == "group" and value is None:
                continue
            if not isinstance(value, str):
                raise TypeError(f"`{arg}` must be a str, got {describe(value)}")
            if not value.strip():
                raise ValueError(f"`{arg}` must not be empty, got {value!r}")
        if self.group is None:
            object.__setattr__(self, "group", self.name)
        if not isinstance(self.path, str | os.PathLike):
            raise TypeError(f"`path` must be a str or path, got {describe(self.path)}")
        object.__setattr__(self, "path", os.fspath(self.path))

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], name: str | None = None, group: str | None = None) -> SetSpec:
        """A set from a run folder or a ``.pt`` file, named after its folder unless ``name`` is given.

        The default name is the run folder's name for a folder or a ``synthetic.pt`` file, else the file's stem
        (``sets/dm_ipc10.pt`` -> ``dm_ipc10``).

        Raises:
            FileNotFoundError: If ``path`` is neither a file nor a folder holding ``synthetic.pt``.
        """
        file = resolve_set_path(path)
        if name is None:
            name = file.resolve().parent.name if file.name == _SET_FILE else file.stem
        return cls(name=name, path=str(file), group=group)


@dataclass(frozen=True)
class Cell:
    """One training run of an evaluation: a set, a model and a seed.

    Args:
        set: The synthetic set.
        model: The architecture and its recipe.
        seed: Seeds the model initialisation, the data order and the augmentation (an int >= 0).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``seed`` is negative.
    """

    set: SetSpec
    model: ModelSpec
    seed: int

    def __post_init__(self) -> None:
        if not isinstance(self.set, SetSpec):
            raise TypeError(f"`set` must be a SetSpec, got {describe(self.set)}")
        if not isinstance(self.model, ModelSpec):
            raise TypeError(f"`model` must be a ModelSpec, got {describe(self.model)}")
        check_positive_int("seed", self.seed, minimum=0)

    @property
    def key(self) -> str:
        """A file-name-safe identifier, unique within a suite: ``<set>--<model>--seed<seed>``."""
        return _cell_key(self.set.name, self.model.display_name, self.seed)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "_"


def _cell_key(set_name: str, model_label: str, seed: int) -> str:
    """The identifier [`Cell.key`][hmdc_modules.evaluation.cells.Cell.key] builds from its three parts."""
    return f"{_slug(set_name)}--{_slug(model_label)}--seed{seed}"


def plan_cells(sets: Sequence[SetSpec], models: Sequence[ModelSpec], seeds: Sequence[int]) -> list[Cell]:
    """Every (set, model, seed) cell of a suite, in a fixed order: sets, then models, then seeds.

    The order depends only on the arguments, so every rank of a distributed run builds the same list and can take
    ``cells[rank::world_size]``.

    Args:
        sets: The synthetic sets, with unique names.
        models: The architectures, with unique display names.
        seeds: The seeds, unique ints >= 0.

    Returns:
        ``len(sets) * len(models) * len(seeds)`` cells.

    Raises:
        TypeError: If an entry has the wrong type.
        ValueError: If a list is empty, or names, display names, seeds or cell keys repeat.

    Examples:
        >>> cells = plan_cells([SetSpec("a", "a.pt")], [ModelSpec("convnet", width=8)], [0, 1])
        >>> [c.key for c in cells]
        ['a--convnet--seed0', 'a--convnet--seed1']
    """
    for arg, values in (("sets", sets), ("models", models), ("seeds", seeds)):
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise TypeError(f"`{arg}` must be a list, got {describe(values)}")
        if not values:
            raise ValueError(f"`{arg}` must not be empty, got {list(values)!r}")
    for item in sets:
        if not isinstance(item, SetSpec):
            raise TypeError(f"`sets` must hold SetSpec objects, got {describe(item)}")
    for item in models:
        if not isinstance(item, ModelSpec):
            raise TypeError(f"`models` must hold ModelSpec objects, got {describe(item)}")
    for seed in seeds:
        check_positive_int("seeds", seed, minimum=0)
    _check_unique("sets", [s.name for s in sets], "set names")
    _check_unique("models", [m.display_name for m in models], "model labels", " (give `label` to tell them apart)")
    _check_unique("seeds", list(seeds), "seeds")
    cells = [Cell(s, m, seed) for s in sets for m in models for seed in seeds]
    _check_unique("sets", [c.key for c in cells], "cell keys", " (names may not differ only in special characters)")
    return cells


def _check_unique(arg: str, values: list[Any], what: str, hint: str = "") -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"`{arg}`: {what} must be unique{hint}, got repeats {repeated}")


@dataclass(frozen=True)
class CellResult:
    """What training one cell produced. Accuracies are percentages of the test images classified correctly.

    Attributes:
        set_name: The set's report name.
        set_path: The set's file.
        set_sha256: SHA-256 of that file when it was evaluated.
        model: The resolved recipe, [`ModelSpec.to_dict`][hmdc_modules.evaluation.pool.ModelSpec.to_dict].
        seed: The cell's seed.
        classes: The classes of the set, whose test images were used.
        num_train: Training images after decoding (multi-formation).
        num_test: Test images.
        epochs: Epochs trained.
        final_accuracy: Test accuracy after the last epoch.
        best_accuracy: The best test accuracy over all evaluations (every ``eval_every`` epochs and after the last
            one): the HMDC paper's metric, which selects on the test set.
        best_epoch: The epoch (1-based) of ``best_accuracy`` (the first, on ties).
        history: ``(epoch, accuracy)`` of every evaluation, in order.
        final_loss: Mean training loss of the last epoch.
        seconds: Wall-clock time of the training and tests.
        settings: The [`EvalSettings`][hmdc_modules.evaluation.training.EvalSettings] as a dict.
        set_group: The report column the set is pooled into (``None``: ``set_name``; see
            [`SetSpec`][hmdc_modules.evaluation.cells.SetSpec]).
    """

    set_name: str
    set_path: str
    set_sha256: str
    model: dict[str, Any]
    seed: int
    classes: list[int]
    num_train: int
    num_test: int
    epochs: int
    final_accuracy: float
    best_accuracy: float
    best_epoch: int
    history: list[tuple[int, float]]
    final_loss: float
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    set_group: str | None = None

    @property
    def model_label(self) -> str:
        """The model's display name."""
        return str(self.model["label"])

    @property
    def group(self) -> str:
        """The report column: ``set_group``, or ``set_name`` when no group was given."""
        return self.set_group if self.set_group is not None else self.set_name

    @property
    def family(self) -> str:
        """``"cnn"`` or ``"vit"``."""
        return str(self.model["family"])

    @property
    def key(self) -> str:
        """The cell's identifier (see [`Cell.key`][hmdc_modules.evaluation.cells.Cell.key])."""
        return _cell_key(self.set_name, self.model_label, self.seed)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON values."""
        return {
            "set_name": self.set_name,
            "set_path": self.set_path,
            "set_sha256": self.set_sha256,
            "model": dict(self.model),
            "seed": self.seed,
            "classes": list(self.classes),
            "num_train": self.num_train,
            "num_test": self.num_test,
            "epochs": self.epochs,
            "final_accuracy": self.final_accuracy,
            "best_accuracy": self.best_accuracy,
            "best_epoch": self.best_epoch,
            "history": [[int(e), float(a)] for e, a in self.history],
            "final_loss": self.final_loss,
            "seconds": self.seconds,
            "settings": dict(self.settings),
            "set_group": self.set_group,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellResult:
        """Rebuild a record from [`to_dict`][hmdc_modules.evaluation.cells.CellResult.to_dict]'s output.

        Raises:
            TypeError: If ``data`` is not a mapping.
            ValueError: If a field is missing.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"`data` must be a dict, got {describe(data)}")
        required = [f for f in cls.__dataclass_fields__ if f not in ("settings", "set_group")]
        missing = [f for f in required if f not in data]
        if missing:
            raise ValueError(f"`data` is not a cell result: missing fields {missing}")
        values = {name: data[name] for name in required}
        values["history"] = [(int(e), float(a)) for e, a in data["history"]]
        values["classes"] = [int(c) for c in data["classes"]]
        values["model"] = dict(data["model"])
        group = data.get("set_group")
        if group is not None and not isinstance(group, str):
            raise TypeError(f"`data['set_group']` must be a str or None, got {describe(group)}")
        return cls(**values, settings=dict(data.get("settings", {})), set_group=group)

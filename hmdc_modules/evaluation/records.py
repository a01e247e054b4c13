r"""The records of an evaluation, and their JSON form: settings, sets, models, cells and cell results.

Every record is a frozen dataclass that checks its arguments, and every one that is stored has ``to_dict`` (plain
JSON values) and ``from_dict`` (the inverse, refusing what is not such a record). This is the only module that
defines what an evaluation folder's JSON files hold:

- [`EvalSettings`][hmdc_modules.evaluation.records.EvalSettings]: the training and test settings a folder is bound
  to (``settings.json``);
- [`SetSpec`][hmdc_modules.evaluation.records.SetSpec]: a synthetic set and its report column;
- [`ModelSpec`][hmdc_modules.evaluation.records.ModelSpec]: one architecture of the pool and its recipe;
- [`Cell`][hmdc_modules.evaluation.records.Cell]: one (set, model, seed) training;
- [`CellResult`][hmdc_modules.evaluation.records.CellResult]: what a cell's training produced
  (``cells/<key>.json``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from hmdc_modules._validation import check_non_negative_float, check_positive_int, describe
from hmdc_modules.condensation.precision import check_precision
from hmdc_modules.evaluation.augmentation import AUGMENT_MODES, check_lr_schedule
from hmdc_modules.evaluation.foreign import SetSource
from hmdc_modules.evaluation.pool import default_learning_rate, model_family

__all__ = ["Cell", "CellResult", "EvalSettings", "ModelSpec", "SetSpec", "resolve_set_path", "weights_file_info"]

SET_FILE = "synthetic.pt"
"""The file a run folder holds its synthetic set in."""

_NOT_COMPARED = ("data_root", "test_batch_size", "metric")


def _mapping(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise TypeError(f"`data` must be a dict ({what}), got {describe(data)}")
    return data


def _check_name(arg: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise TypeError(f"`{arg}` must be a str{' or None' if optional else ''}, got {describe(value)}")
    if not value.strip():
        raise ValueError(f"`{arg}` must not be empty, got {value!r}")


def _check_path(arg: str, value: Any) -> str:
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"`{arg}` must be a str or path, got {describe(value)}")
    return os.fspath(value)


# ----------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSettings:
    r"""The training and test settings shared by every cell of an evaluation.

    The defaults are the ``hmdc`` protocol (the HMDC authors' evaluation); see
    [`protocols`][hmdc_modules.evaluation.protocols] for the ``dsa`` and ``ddranking`` ones and
    [`protocol_settings`][hmdc_modules.evaluation.protocols.protocol_settings] to build them.

    Args:
        epochs: Training epochs (the paper: 2000).
        eval_every: Test every this many epochs (the paper: 10); the last epoch is always tested. 0 tests only
            after the last epoch, so that the best accuracy equals the final one.
        batch_size: Training batch size (128). A last batch of a single image is merged into the previous one
            (BatchNorm cannot train on one image).
        momentum: SGD momentum (0.9).
        weight_decay: SGD weight decay ($5 \cdot 10^{-4}$).
        augment: The training augmentation: ``"idc"`` (every op on every image, one draw per image: the HMDC
            authors'), ``"dsa"`` (DSA's one op per batch) or ``"none"`` (see
            [`augmentation`][hmdc_modules.evaluation.augmentation]). ``True``/``False`` (earlier versions) mean
            ``"idc"``/``"none"``.
        cutmix_p: Probability of [`cutmix`][hmdc_modules.condensation.augment.cutmix] per batch (0.5); never for
            ViTs; 0 disables it.
        data_root: The CIFAR-10 folder the test split is read from (see
            [`load_cifar10`][hmdc_modules.condensation.datasets.load_cifar10]).
        test_per_class: Use only the first this many test images of each class (``None``: all 1,000).
        test_batch_size: Batch size of the test passes (memory only; results do not depend on it).
        num_classes: Output classes of the models (10 for CIFAR-10; the set's labels must be below it).
        protocol: The name of the protocol the settings come from (recorded; ``"hmdc"``, ``"dsa"``,
            ``"ddranking"``, or any name for a recipe of one's own).
        lr: The SGD learning rate of every model whose [`ModelSpec`][hmdc_modules.evaluation.records.ModelSpec]
            gives none; ``None`` (``hmdc``) takes each model's
            [`default_learning_rate`][hmdc_modules.evaluation.pool.default_learning_rate]. A set's learned rate
            (MTT) comes first unless ``use_learned_lr`` is false.
        lr_schedule: ``"constant"``, ``"half"`` or ``"step:N"`` (see
            [`learning_rate_at`][hmdc_modules.evaluation.augmentation.learning_rate_at]).
        lr_decay: The factor of each decay of the schedule (0.1).
        metric: The protocol's reported metric, ``"best"`` (over the tests, selected on the test set) or
            ``"final"``; both are always recorded, this one is named first in the reports.
        use_learned_lr: Train with a set's learned learning rate (MTT's ``lr_best.pt``) when it has one.
        precision: The arithmetic of the training and test forward passes (and the loss): ``"fp32"`` (the
            default), ``"bf16"`` (under ``torch.autocast`` to bfloat16) or ``"tf32"`` (TensorFloat-32 matmuls and
            convolutions, CUDA only); see [`precision_context`][hmdc_modules.condensation.precision.precision_context].
            Parameters, optimiser state and data stay float32. It changes results, so it is compared like the other
            settings: a folder holds cells of one precision. Records written before it existed read as ``"fp32"``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a number is out of range or ``precision`` is unknown.

    Examples:
        >>> EvalSettings(epochs=300).batch_size
        128
        >>> EvalSettings.from_dict(EvalSettings(epochs=3).to_dict()) == EvalSettings(epochs=3)
        True
        >>> EvalSettings(epochs=3).differences(EvalSettings(epochs=2))
        {'epochs': (2, 3)}
        >>> EvalSettings(precision="bf16").differences(EvalSettings())
        {'precision': ('fp32', 'bf16')}
    """

    epochs: int = 2000
    eval_every: int = 10
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: str = "idc"
    cutmix_p: float = 0.5
    data_root: str = "data/cifar10"
    test_per_class: int | None = None
    test_batch_size: int = 500
    num_classes: int = 10
    protocol: str = "hmdc"
    lr: float | None = None
    lr_schedule: str = "constant"
    lr_decay: float = 0.1
    metric: str = "best"
    use_learned_lr: bool = True
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("eval_every", self.eval_every, minimum=0)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("test_batch_size", self.test_batch_size)
        check_positive_int("num_classes", self.num_classes)
        if self.test_per_class is not None:
            check_positive_int("test_per_class", self.test_per_class)
        for name in ("momentum", "weight_decay", "cutmix_p"):
            object.__setattr__(self, name, check_non_negative_float(name, getattr(self, name)))
        if self.cutmix_p > 1.0:
            raise ValueError(f"`cutmix_p` must be in [0, 1], got {self.cutmix_p}")
        if isinstance(self.augment, bool):  # earlier versions: on (the IDC mix) or off
            object.__setattr__(self, "augment", "idc" if self.augment else "none")
        if not isinstance(self.augment, str):
            raise TypeError(f"`augment` must be a str, got {describe(self.augment)}")
        if self.augment not in AUGMENT_MODES:
            raise ValueError(f"`augment` must be one of {AUGMENT_MODES}, got {self.augment!r}")
        _check_name("protocol", self.protocol)
        if self.lr is not None:
            object.__setattr__(self, "lr", check_non_negative_float("lr", self.lr))
            if not self.lr > 0.0:
                raise ValueError(f"`lr` must be > 0 or None, got {self.lr}")
        check_lr_schedule(self.lr_schedule)
        object.__setattr__(self, "lr_decay", check_non_negative_float("lr_decay", self.lr_decay))
        if self.metric not in ("best", "final"):
            raise ValueError(f"`metric` must be 'best' or 'final', got {self.metric!r}")
        if not isinstance(self.use_learned_lr, bool):
            raise TypeError(f"`use_learned_lr` must be a bool, got {describe(self.use_learned_lr)}")
        object.__setattr__(self, "data_root", _check_path("data_root", self.data_root))
        check_precision(self.precision)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain JSON values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalSettings:
        """Rebuild settings from [`to_dict`][hmdc_modules.evaluation.records.EvalSettings.to_dict]'s output.

        A setting missing from ``data`` (a file written before it existed) takes its default: settings without
        ``precision`` read as ``"fp32"``.

        Raises:
            TypeError: If ``data`` is not a mapping or a value has the wrong type.
            ValueError: If ``data`` holds an unknown key or a value out of range.
        """
        data = _mapping(data, "evaluation settings")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"`data` holds unknown settings {unknown}")
        return cls(**data)

    def differences(self, other: EvalSettings) -> dict[str, tuple[Any, Any]]:
        """The settings that change results and differ from ``other``: ``{name: (other's, self's)}``.

        ``data_root`` (the data may move), ``test_batch_size`` (memory only) and ``metric`` (which of the two
        recorded accuracies the reports name first) are not compared.

        Raises:
            TypeError: If ``other`` is not an ``EvalSettings``.
        """
        if not isinstance(other, EvalSettings):
            raise TypeError(f"`other` must be an EvalSettings, got {describe(other)}")
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (theirs[k], mine[k]) for k in mine if k not in _NOT_COMPARED and mine[k] != theirs[k]}


# ----------------------------------------------------------------------------------------------------------------
# Sets
# ----------------------------------------------------------------------------------------------------------------


_DETECT = SetSource()
"""Read a set file by detecting its format, with no options."""

_FOLDER_SETS = (SET_FILE, "images_best.pt", "synthetic_images.pth", "data.pt")
"""The set files a folder may hold, looked for in this order: this library's run folder, an MTT-style folder, the
HMDC authors' output folder, an IDC/DREAM folder."""


def resolve_set_path(path: str | os.PathLike[str]) -> Path:
    """The synthetic-set file a command-line argument names: a set file, or a folder holding one.

    Args:
        path: A set file, or a folder holding ``synthetic.pt`` (what ``examples/hmdc_cifar10.py`` and
            [`make_random_real_set`][hmdc_modules.evaluation.baselines.make_random_real_set] write), else MTT's
            ``images_best.pt``, the HMDC authors' ``synthetic_images.pth`` or IDC/DREAM's ``data.pt``.

    Returns:
        The file's path.

    Raises:
        TypeError: If ``path`` is not a string or path.
        FileNotFoundError: If there is no such file, or the folder holds none of those files.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> (folder / "synthetic.pt").touch()
        >>> resolve_set_path(folder).name
        'synthetic.pt'
    """
    path = Path(_check_path("path", path)).expanduser()
    if path.is_dir():
        for name in _FOLDER_SETS:
            if (path / name).is_file():
                return path / name
        others = ", ".join(f"'{name}'" for name in _FOLDER_SETS[1:])
        raise FileNotFoundError(
            f"`path` '{path}' is a folder without '{SET_FILE}' (nor {others}): not a run folder or set folder"
        )
    if not path.is_file():
        raise FileNotFoundError(f"`path` '{path}' is neither a synthetic-set file nor a run folder")
    return path


@dataclass(frozen=True)
class SetSpec:
    """A synthetic set to evaluate: its report name, its file and how to read it.

    Args:
        name: The name in file names and per-set reports; unique within a suite.
        path: The set file (use [`SetSpec.from_path`][hmdc_modules.evaluation.records.SetSpec.from_path] for
            folders).
        group: The column the set's results are pooled into in the reports (``None``: its own ``name``). Give the
            sets that one method condensed with different seeds the same group, so that the reported spread holds
            the condensation's variance as well as the evaluation's.
        source: How to read the file: its format, normalisation and options
            ([`SetSource`][hmdc_modules.evaluation.foreign.SetSource]; the default detects the format, which is
            enough for this library's files and the HMDC authors' ones).

    Raises:
        TypeError: If ``name`` or ``group`` is not a string, ``path`` not a path or ``source`` not a ``SetSource``.
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
    source: SetSource = _DETECT

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        _check_name("group", self.group, optional=True)
        if self.group is None:
            object.__setattr__(self, "group", self.name)
        object.__setattr__(self, "path", _check_path("path", self.path))
        if not isinstance(self.source, SetSource):
            raise TypeError(f"`source` must be a SetSource, got {describe(self.source)}")

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        name: str | None = None,
        group: str | None = None,
        source: SetSource | None = None,
    ) -> SetSpec:
        """A set from a folder or a set file, named after its folder unless ``name`` is given.

        The default name is the folder's name for a folder or a file a folder is looked up by (``synthetic.pt``,
        ``images_best.pt``, ``synthetic_images.pth``, ``data.pt``), else the file's stem
        (``sets/dm_ipc10.pt`` -> ``dm_ipc10``).

        Raises:
            TypeError: If ``path`` is not a string or path.
            FileNotFoundError: If ``path`` is neither a file nor a folder holding a set file.
        """
        file = resolve_set_path(path)
        if name is None:
            name = file.resolve().parent.name if file.name in _FOLDER_SETS else file.stem
        return cls(name=name, path=str(file), group=group, source=source if source is not None else SetSource())


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One architecture of the evaluation pool and how it is trained.

    Args:
        name: ``"convnet"`` (the library's ConvNet-3) or any timm model name (``"resnet18"``,
            ``"vit_tiny_patch16_224"``, ``"test_vit"``, ...).
        lr: SGD learning rate; ``None`` takes
            [`default_learning_rate`][hmdc_modules.evaluation.pool.default_learning_rate] of ``name``.
        weights: A local weights file to start from: a file of ``python -m hmdc_modules.pretrain``, a timm
            checkpoint or a state dict (see [`create_model`][hmdc_modules.condensation.models.factory.create_model]):
            the backbone is loaded, the classifier head is new. ``None`` (the default) trains from scratch. Never
            downloaded.
        pretrained: ``True`` or a timm tag: start from timm's pretrained weights (timm's loader and cache; offline
            it fails at once with one line), backbone loaded, head new. Exclusive with ``weights``. The paper's
            ``_ft`` models.
        image_size: The side the model sees: the 32x32 images are resized to it (bilinear) after augmentation and
            before testing.
        patch_size: Patch size of a ViT; ``None`` picks one: ``image_size // 8`` below 224 (4 at 32) and the
            architecture's own from 224 on. Must be ``None`` for other models.
        width: Channels of the ConvNet (``None``: 128, the ConvNet-3); a small width gives a tiny model for quick
            checks. Must be ``None`` for other models.
        label: The name the model has in the reports and in the output folder; ``None`` uses ``name``. Two specs of
            the same architecture with different settings need different labels.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``name`` is not ``"convnet"`` or a timm model name, ``lr`` is not a finite positive number,
            a size is below 1, or ``patch_size``/``width`` is given for a model it does not apply to.

    Examples:
        >>> spec = ModelSpec("convnet", width=8)
        >>> spec.learning_rate, spec.family, spec.display_name
        (0.01, 'cnn', 'convnet')
        >>> ModelSpec("test_vit").effective_patch_size
        4
        >>> ModelSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()  # the same recipe
        True
    """

    name: str
    lr: float | None = None
    weights: str | None = None
    image_size: int = 32
    patch_size: int | None = None
    width: int | None = None
    label: str | None = None
    pretrained: bool | str | None = None

    def __post_init__(self) -> None:
        family = model_family(self.name)  # checks the name
        if self.pretrained is False:
            object.__setattr__(self, "pretrained", None)
        if self.pretrained is not None:
            if not (self.pretrained is True or (isinstance(self.pretrained, str) and self.pretrained.strip())):
                raise TypeError(f"`pretrained` must be True, a timm tag or None, got {describe(self.pretrained)}")
            if self.weights is not None:
                raise ValueError(
                    f"`pretrained` and `weights` are exclusive, got pretrained={self.pretrained!r} and "
                    f"weights={self.weights!r}"
                )
            if self.name.lower() == "convnet":
                raise ValueError("`pretrained`: the ConvNet has no hub weights; give it a weights file instead")
        if self.lr is not None:
            if isinstance(self.lr, bool) or not isinstance(self.lr, int | float):
                raise TypeError(f"`lr` must be a float or None, got {describe(self.lr)}")
            if not (math.isfinite(self.lr) and self.lr > 0):
                raise ValueError(f"`lr` must be a finite number > 0, got {self.lr}")
            object.__setattr__(self, "lr", float(self.lr))
        if self.weights is not None:
            object.__setattr__(self, "weights", _check_path("weights", self.weights))
        check_positive_int("image_size", self.image_size)
        if self.patch_size is not None:
            check_positive_int("patch_size", self.patch_size)
            if family != "vit":
                raise ValueError(
                    f"`patch_size` only applies to vision transformers, got {self.patch_size} for {self.name!r}"
                )
        if self.width is not None:
            check_positive_int("width", self.width)
            if self.name.lower() != "convnet":
                raise ValueError(f"`width` only applies to 'convnet', got width={self.width} for {self.name!r}")
        _check_name("label", self.label, optional=True)

    @property
    def display_name(self) -> str:
        """The name in reports and file names: ``label``, else ``name``."""
        return self.label if self.label is not None else self.name

    @property
    def family(self) -> str:
        """``"vit"`` or ``"cnn"`` (see [`model_family`][hmdc_modules.evaluation.pool.model_family])."""
        return model_family(self.name)

    @property
    def learning_rate(self) -> float:
        """The SGD learning rate used: ``lr``, else the protocol's default for ``name``."""
        return self.lr if self.lr is not None else default_learning_rate(self.name)

    @property
    def effective_patch_size(self) -> int | None:
        """The ViT patch size used (``None``: the architecture's own, and always for non-ViTs)."""
        if self.family != "vit":
            return None
        if self.patch_size is not None:
            return self.patch_size
        return max(1, self.image_size // 8) if self.image_size < 224 else None

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain JSON values (learning rate, patch size and family filled in).

        Two specs that train the same model the same way give equal dictionaries; the suite compares them to
        decide whether a stored result still applies.
        """
        return {
            "name": self.name,
            "label": self.display_name,
            "family": self.family,
            "lr": self.learning_rate,
            "weights": self.weights,
            "image_size": self.image_size,
            "patch_size": self.effective_patch_size,
            "width": self.width,
            **({"pretrained": self.pretrained} if self.pretrained is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Rebuild a spec from [`to_dict`][hmdc_modules.evaluation.records.ModelSpec.to_dict]'s output.

        Raises:
            TypeError: If ``data`` is not a mapping.
            ValueError: If ``data`` lacks ``name`` or holds invalid values.
        """
        data = _mapping(data, "a model recipe")
        if "name" not in data:
            raise ValueError(f"`data` must hold a 'name', got keys {sorted(data)}")
        family = model_family(data["name"])
        return cls(
            name=data["name"],
            lr=data.get("lr"),
            weights=data.get("weights"),
            image_size=data.get("image_size", 32),
            patch_size=data.get("patch_size") if family == "vit" else None,
            width=data.get("width"),
            label=data.get("label"),
            pretrained=data.get("pretrained"),
        )

    def build(self, num_classes: int = 10) -> nn.Module:
        """Create the model, freshly initialised from the global torch RNG (or loaded from ``weights``).

        Evaluation trains with first-order gradients only, so a ViT is built with timm's fused attention kernels
        (``create_model(..., double_backward=False)``, faster); gradient matching, which differentiates through a
        gradient, needs the explicit path instead (see
        [`disable_fused_attention`][hmdc_modules.adapters.timm.disable_fused_attention]).

        Args:
            num_classes: Number of output classes.

        Returns:
            The model on the CPU, in training mode.

        Raises:
            FileNotFoundError: If ``weights`` names no file.
            ValueError: If the weights file matches no tensor of the model.

        Examples:
            >>> import torch
            >>> ModelSpec("convnet", width=8).build(num_classes=3)(torch.zeros(1, 3, 32, 32)).shape
            torch.Size([1, 3])
        """
        from hmdc_modules.condensation import ConvNet, create_model, load_weights

        check_positive_int("num_classes", num_classes)
        if self.name.lower() == "convnet":
            if self.weights is not None and self.width in (None, 128):  # the kit's loader: backbone loaded, new head
                return create_model("convnet", num_classes, image_size=self.image_size, weights=self.weights).train()
            model: nn.Module = ConvNet(num_classes=num_classes, width=self.width or 128, image_size=self.image_size)
            if self.weights is not None:
                load_weights(model, self.weights)
                model.classifier.reset_parameters()
            return model.train()
        model = create_model(
            self.name,
            num_classes,
            image_size=self.image_size,
            patch_size=self.effective_patch_size,
            weights=self.weights,
            pretrained=self.pretrained,
            double_backward=False,  # first-order training only: timm's fused attention kernels stay on
        )
        return model.train()


def weights_file_info(path: str | os.PathLike[str]) -> Any:
    """The architecture a library weights file records (``WeightsInfo``: image size, patch size, ...), or ``None``
    for any other weights file."""
    from hmdc_modules.condensation import read_weights_info

    return read_weights_info(path)


# ----------------------------------------------------------------------------------------------------------------
# Cells and their results
# ----------------------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "_"


def cell_key(set_name: str, model_label: str, seed: int) -> str:
    """The identifier of a cell: ``<set>--<model>--seed<seed>``, file-name safe."""
    return f"{_slug(set_name)}--{_slug(model_label)}--seed{seed}"


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

    Examples:
        >>> Cell(SetSpec("my set", "a.pt"), ModelSpec("convnet", width=8), 2).key
        'my_set--convnet--seed2'
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
        return cell_key(self.set.name, self.model.display_name, self.seed)


_OPTIONAL_RESULT_FIELDS = ("settings", "set_group", "set_info")


@dataclass(frozen=True)
class CellResult:
    """What training one cell produced. Accuracies are percentages of the test images classified correctly.

    Attributes:
        set_name: The set's report name.
        set_path: The set's file.
        set_sha256: SHA-256 of that file's bytes when it was evaluated.
        model: The resolved recipe, [`ModelSpec.to_dict`][hmdc_modules.evaluation.records.ModelSpec.to_dict].
        seed: The cell's seed.
        classes: The classes of the set, whose test images were used.
        num_train: Training images after decoding (multi-formation).
        num_test: Test images.
        epochs: Epochs trained.
        final_accuracy: Test accuracy after the last epoch.
        best_accuracy: The best test accuracy over all evaluations (every ``eval_every`` epochs and after the last
            one). It is the HMDC paper's metric, and it selects the epoch on the test set, so it is optimistic.
        best_epoch: The epoch (1-based) of ``best_accuracy`` (the first, on ties).
        history: ``(epoch, accuracy)`` of every evaluation, in order.
        final_loss: Mean training loss of the last epoch.
        seconds: Wall-clock time of the training and tests.
        settings: The [`EvalSettings`][hmdc_modules.evaluation.records.EvalSettings] as a dict.
        set_group: The report column the set is pooled into (``None``: ``set_name``; see
            [`SetSpec`][hmdc_modules.evaluation.records.SetSpec]).
        set_info: How the set was read and trained on: its ``format`` and ``normalization``, whether soft labels
            were used, the learned learning rate it holds (``learned_lr``) and the rate the model trained with
            (``lr``). Empty in records written before it existed.

    Examples:
        >>> result = CellResult("s", "s.pt", "", {"label": "convnet", "family": "cnn"}, 0, [0, 1], 4, 6, 2,
        ...                     40.0, 50.0, 1, [(1, 50.0), (2, 40.0)], 1.2, 0.5)
        >>> result.key, result.group
        ('s--convnet--seed0', 's')
        >>> CellResult.from_dict(result.to_dict()) == result
        True
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
    set_info: dict[str, Any] = field(default_factory=dict)

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
        """The cell's identifier (see [`Cell.key`][hmdc_modules.evaluation.records.Cell.key])."""
        return cell_key(self.set_name, self.model_label, self.seed)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON values."""
        data = dataclasses.asdict(self)
        data["history"] = [[int(e), float(a)] for e, a in self.history]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellResult:
        """Rebuild a record from [`to_dict`][hmdc_modules.evaluation.records.CellResult.to_dict]'s output.

        Records written before ``set_group`` and ``settings`` existed are accepted.

        Raises:
            TypeError: If ``data`` is not a mapping or a field has the wrong type.
            ValueError: If a field is missing.
        """
        data = _mapping(data, "a cell result")
        required = [f.name for f in dataclasses.fields(cls) if f.name not in _OPTIONAL_RESULT_FIELDS]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"`data` is not a cell result: missing fields {missing}")
        values = {name: data[name] for name in required}
        try:
            values["history"] = [(int(e), float(a)) for e, a in data["history"]]
            values["classes"] = [int(c) for c in data["classes"]]
            values["model"] = dict(data["model"])
        except (TypeError, ValueError) as error:
            raise TypeError(f"`data` is not a cell result: {error}") from None
        group = data.get("set_group")
        if group is not None and not isinstance(group, str):
            raise TypeError(f"`data['set_group']` must be a str or None, got {describe(group)}")
        info = data.get("set_info", {})
        if not isinstance(info, Mapping):
            raise TypeError(f"`data['set_info']` must be a dict, got {describe(info)}")
        return cls(**values, settings=dict(data.get("settings", {})), set_group=group, set_info=dict(info))

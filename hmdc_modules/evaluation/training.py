r"""Training one model on a condensed set and testing it on CIFAR-10: the HMDC evaluation protocol.

The protocol (method doc, section 7): SGD with momentum 0.9, weight decay $5 \cdot 10^{-4}$ and a constant
per-model learning rate, batch 128 over the decoded synthetic set, unseeded differentiable augmentation (DSA,
the IDC variant) followed by cutmix with probability 0.5 (not for ViTs), soft-target cross entropy; the test images
are only resized. The test accuracy is measured every ``eval_every`` epochs and after the last one; both the
final-epoch accuracy and the best one seen (the paper's metric) are kept.

The model trains in training mode and is tested in evaluation mode. (The reference implementation switches to
evaluation mode before training and never back, which freezes a ResNet's BatchNorm statistics; that quirk is not
reproduced.)
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmdc_modules._validation import check_non_negative_float, check_positive_int, check_tensor, describe
from hmdc_modules.distributed import resolve_device
from hmdc_modules.evaluation.cells import Cell, CellResult, file_sha256

__all__ = ["EvalSettings", "evaluate_accuracy", "load_test_set", "resolve_device", "run_cell"]

_COMPARED_EXCLUDED = ("data_root", "test_batch_size")


@dataclass(frozen=True)
class EvalSettings:
    r"""The training and test settings shared by every cell of an evaluation.

    Args:
        epochs: Training epochs (the paper: 2000).
        eval_every: Test every this many epochs (the paper: 10); the last epoch is always tested. 0 tests only
            after the last epoch, so that the best accuracy equals the final one.
        batch_size: Training batch size (128). A last batch of a single image is merged into the previous one
            (BatchNorm cannot train on one image).
        momentum: SGD momentum (0.9).
        weight_decay: SGD weight decay ($5 \cdot 10^{-4}$).
        augment: Apply [`DifferentiableAugment`][hmdc_modules.condensation.augment.DifferentiableAugment] (unseeded,
        one draw
            per image) to every training batch.
        cutmix_p: Probability of [`cutmix`][hmdc_modules.condensation.augment.cutmix] per batch (0.5); never for ViTs; 0
            disables it.
        data_root: The CIFAR-10 folder the test split is read from (see
            [`load_cifar10`][hmdc_modules.condensation.data.load_cifar10]).
        test_per_class: Use only the first this many test images of each class (``None``: all 1,000).
        test_batch_size: Batch size of the test passes (memory only; results do not depend on it).
        num_classes: Output classes of the models (10 for CIFAR-10; the set's labels must be below it).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a number is out of range.

    Examples:
        >>> EvalSettings(epochs=300).batch_size
        128
    """

    epochs: int = 2000
    eval_every: int = 10
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    cutmix_p: float = 0.5
    data_root: str = "data/cifar10"
    test_per_class: int | None = None
    test_batch_size: int = 500
    num_classes: int = 10

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
        if not isinstance(self.augment, bool):
            raise TypeError(f"`augment` must be a bool, got {describe(self.augment)}")
        if not isinstance(self.data_root, str | os.PathLike):
            raise TypeError(f"`data_root` must be a str or path, got {describe(self.data_root)}")
        object.__setattr__(self, "data_root", os.fspath(self.data_root))

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain JSON values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalSettings:
        """Rebuild settings from [`to_dict`][hmdc_modules.evaluation.training.EvalSettings.to_dict]'s output.

        Raises:
            TypeError: If ``data`` is not a mapping or a value has the wrong type.
            ValueError: If ``data`` holds an unknown key.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"`data` must be a dict, got {describe(data)}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"`data` holds unknown settings {unknown}")
        return cls(**data)

    def differences(self, other: EvalSettings) -> dict[str, tuple[Any, Any]]:
        """The settings that change results and differ from ``other``: ``{name: (other's, self's)}``.

        ``data_root`` (the data may move) and ``test_batch_size`` (memory only) are not compared.
        """
        if not isinstance(other, EvalSettings):
            raise TypeError(f"`other` must be an EvalSettings, got {describe(other)}")
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (theirs[k], mine[k]) for k in mine if k not in _COMPARED_EXCLUDED and mine[k] != theirs[k]}


def load_test_set(settings: EvalSettings, classes: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """The CIFAR-10 test images (``uint8``) and labels of ``classes``, as the settings select them.

    Args:
        settings: Gives ``data_root`` and ``test_per_class``.
        classes: Class indices to keep (``None``: all).

    Returns:
        ``(images, labels)``, see [`load_cifar10`][hmdc_modules.condensation.data.load_cifar10].

    Raises:
        FileNotFoundError: If the data is missing (the library's message: where it looked and how to get it).

    Shape:
        - output images: $(N, 3, 32, 32)$, ``uint8``; output labels: $(N,)$
    """
    from hmdc_modules.condensation.data import load_cifar10

    if not isinstance(settings, EvalSettings):
        raise TypeError(f"`settings` must be an EvalSettings, got {describe(settings)}")
    return load_cifar10(
        settings.data_root,
        "test",
        progress=False,
        classes=list(classes) if classes is not None else None,
        per_class=settings.test_per_class,
    )


def _resize(x: Tensor, size: int) -> Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    image_size: int | None = None,
    batch_size: int = 500,
) -> float:
    """Accuracy of ``model`` in evaluation mode, in percent; the model's mode is restored afterwards.

    Args:
        model: The classifier.
        images: Normalised test images, on the model's device.
        labels: Their class indices.
        image_size: Resize (bilinear) to this side first; ``None`` keeps the size.
        batch_size: Images per forward pass.

    Returns:
        $100 \\cdot$ the fraction of images whose highest logit is their label.

    Raises:
        TypeError: If ``model`` is not a module or a tensor argument is not a tensor.
        ValueError: If the shapes do not match or the set is empty.

    Shape:
        - images: $(N, C, H, W)$; labels: $(N,)$

    Examples:
        >>> from hmdc_modules import ConvNet
        >>> acc = evaluate_accuracy(ConvNet(width=8), torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))
        >>> 0.0 <= acc <= 100.0
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {describe(model)}")
    check_tensor("images", images, ndim=4, floating=True, nonempty=True)
    check_tensor("labels", labels, ndim=1)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"`labels` must have one entry per image ({images.shape[0]}), got shape {tuple(labels.shape)}")
    check_positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size]
            if image_size is not None:
                x = _resize(x, image_size)
            predicted = model(x).argmax(dim=1)
            correct += int((predicted == labels[start : start + batch_size].to(predicted.device)).sum())
    finally:
        model.train(was_training)
    return 100.0 * correct / images.shape[0]


def _batches(order: Tensor, batch_size: int) -> list[Tensor]:
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:  # BatchNorm cannot train on a single image
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


def _stream_seed(seed: int, stream: int) -> int:
    return (seed * 1_000_003 + stream) % (2**63 - 1)


def run_cell(
    cell: Cell,
    settings: EvalSettings,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    test_set: tuple[Tensor, Tensor] | None = None,
) -> CellResult:
    """Train ``cell.model`` on ``cell.set`` with ``cell.seed`` and test it on CIFAR-10: one evaluation cell.

    The result depends only on the cell and the settings (and, through floating point, the device): the seed
    initialises the model (from the global torch RNG, inside ``torch.random.fork_rng`` so the caller's RNG state is
    left untouched), orders the data (a private generator) and draws augmentation and cutmix (another private
    generator). The set is read with [`load_synthetic_set`][hmdc_modules.condensation.data.load_synthetic_set]
    (multi-formation
    decoded); the test images of the set's classes are normalised with the set's own mean and std.

    Args:
        cell: The set, model and seed.
        settings: The shared training and test settings.
        device: Where to train (``"auto"``: CUDA when available).
        progress: Show a tqdm bar over the epochs.
        test_set: The ``uint8`` test images and labels, as
            [`load_test_set`][hmdc_modules.evaluation.training.load_test_set] returns them for the set's classes
            (a cache for runners; ``None`` loads them).

    Returns:
        The [`CellResult`][hmdc_modules.evaluation.cells.CellResult].

    Raises:
        TypeError: If an argument has the wrong type.
        FileNotFoundError: If the set file, the test data or a weights file is missing.
        ValueError: If the set is not a synthetic-set file or holds labels outside ``[0, num_classes)``.

    Examples:
        >>> from hmdc_modules.evaluation import Cell, EvalSettings, ModelSpec, SetSpec
        >>> cell = Cell(SetSpec.from_path("runs/random_ipc1"), ModelSpec("convnet"), seed=0)  # doctest: +SKIP
        >>> result = run_cell(cell, EvalSettings(epochs=300), device="auto")  # doctest: +SKIP
        >>> result.final_accuracy, result.best_accuracy  # doctest: +SKIP
        (24.1, 25.3)
    """
    from tqdm.auto import tqdm

    from hmdc_modules.condensation.augment import DifferentiableAugment, cutmix
    from hmdc_modules.condensation.data import load_synthetic_set, normalize, read_synthetic_set
    from hmdc_modules.functional import soft_cross_entropy

    if not isinstance(cell, Cell):
        raise TypeError(f"`cell` must be a Cell, got {describe(cell)}")
    if not isinstance(settings, EvalSettings):
        raise TypeError(f"`settings` must be an EvalSettings, got {describe(settings)}")
    if not isinstance(progress, bool):
        raise TypeError(f"`progress` must be a bool, got {describe(progress)}")
    device = resolve_device(device)
    started = time.perf_counter()

    stored = read_synthetic_set(cell.set.path)
    train_x, train_y = load_synthetic_set(cell.set.path).tensors
    classes = sorted(int(c) for c in train_y.unique())
    if classes[0] < 0 or classes[-1] >= settings.num_classes:
        raise ValueError(
            f"set '{cell.set.path}' holds labels {classes}, outside [0, num_classes={settings.num_classes})"
        )
    if test_set is None:
        test_set = load_test_set(settings, classes)
    test_images, test_labels = test_set
    check_tensor("test_set[0]", test_images, ndim=4)
    check_tensor("test_set[1]", test_labels, ndim=1)
    test_x = normalize(test_images, stored.mean, stored.std).to(device)
    test_y = test_labels.to(device)
    train_x, train_y = train_x.to(device=device, dtype=torch.float32), train_y.to(device)

    spec, seed = cell.model, cell.seed
    use_cutmix = settings.cutmix_p > 0.0 and spec.family != "vit"
    augment = DifferentiableAugment() if settings.augment else None
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    history: list[tuple[int, float]] = []
    epoch_loss = math.nan
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = spec.build(settings.num_classes).to(device)
        model.train()
        optimizer = torch.optim.SGD(
            model.parameters(), lr=spec.learning_rate, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
        order_generator = torch.Generator().manual_seed(_stream_seed(seed, 1))
        augment_generator = torch.Generator().manual_seed(_stream_seed(seed, 2))
        bar = tqdm(
            range(1, settings.epochs + 1),
            desc=f"{cell.set.name} / {spec.display_name} / seed {seed}",
            unit="ep",
            leave=False,
            disable=not progress,
        )
        for epoch in bar:
            total, seen = torch.zeros((), device=device), 0
            for index in _batches(torch.randperm(train_x.shape[0], generator=order_generator), settings.batch_size):
                index = index.to(device)
                x, y = train_x[index], train_y[index]
                target: Tensor = y
                with torch.no_grad():
                    if augment is not None:
                        x = augment(x, generator=augment_generator)
                    if use_cutmix:
                        x, target = cutmix(x, y, settings.num_classes, p=settings.cutmix_p, generator=augment_generator)
                    x = _resize(x, spec.image_size)
                loss = soft_cross_entropy(model(x), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * x.shape[0]  # summed on the device: no synchronisation per step
                seen += x.shape[0]
            epoch_loss = float(total) / seen
            if epoch == settings.epochs or (settings.eval_every and epoch % settings.eval_every == 0):
                accuracy = evaluate_accuracy(
                    model, test_x, test_y, image_size=spec.image_size, batch_size=settings.test_batch_size
                )
                history.append((epoch, accuracy))
                best = max(a for _, a in history)
                bar.set_postfix(loss=f"{epoch_loss:.3f}", acc=f"{accuracy:.2f}", best=f"{best:.2f}")
        bar.close()

    best_epoch, best_accuracy = history[0]
    for epoch, accuracy in history:
        if accuracy > best_accuracy:
            best_epoch, best_accuracy = epoch, accuracy
    return CellResult(
        set_name=cell.set.name,
        set_path=cell.set.path,
        set_sha256=file_sha256(cell.set.path),
        model=spec.to_dict(),
        seed=seed,
        classes=classes,
        num_train=int(train_x.shape[0]),
        num_test=int(test_x.shape[0]),
        epochs=settings.epochs,
        final_accuracy=history[-1][1],
        best_accuracy=best_accuracy,
        best_epoch=best_epoch,
        history=history,
        final_loss=epoch_loss,
        seconds=time.perf_counter() - started,
        settings=settings.to_dict(),
        set_group=cell.set.group,
    )

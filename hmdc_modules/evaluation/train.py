r"""Training one model on a condensed set and testing it on CIFAR-10: one cell of an evaluation.

The recipe is the [`EvalSettings`][hmdc_modules.evaluation.records.EvalSettings] (see
[`protocols`][hmdc_modules.evaluation.protocols] for the named ones). Under the default ``hmdc`` protocol: SGD with
momentum 0.9, weight decay $5 \cdot 10^{-4}$ and a constant per-model learning rate, batch 128 over the decoded
synthetic set, unseeded differentiable augmentation (DSA, the IDC variant) followed by cutmix with probability 0.5
(not for ViTs), soft-target cross entropy (plain cross entropy for hard labels); the test images are only resized.
The test accuracy is measured every ``eval_every`` epochs and after the last one; both the final-epoch accuracy and
the best one seen are kept. The best one is the HMDC paper's metric; it picks the epoch on the test set, so it is
optimistic, and the final-epoch accuracy is reported beside it.

Under ``settings.precision`` other than ``fp32`` the forward passes of the training steps (and their loss) and of
the tests run inside [`precision_context`][hmdc_modules.condensation.precision.precision_context] (``bf16``:
``torch.autocast`` to bfloat16); the backward pass runs outside it, as ``torch.autocast`` advises. The parameters,
the optimiser's state and the images stay float32.

The model trains in training mode and is tested in evaluation mode. (The reference implementation switches to
evaluation mode before training and never back, which freezes a ResNet's BatchNorm statistics; that quirk is not
reproduced.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmdc_modules._validation import check_positive_int, check_tensor, describe
from hmdc_modules.condensation.precision import check_precision, precision_context
from hmdc_modules.distributed import resolve_device
from hmdc_modules.evaluation.augmentation import (
    build_augment,
    build_optimizer,
    learning_rate_at,
    restarts_momentum_at,
)
from hmdc_modules.evaluation.foreign import SetSource, read_any_set
from hmdc_modules.evaluation.records import Cell, CellResult, EvalSettings, ModelSpec

if TYPE_CHECKING:
    from hmdc_modules.condensation import SyntheticSet

__all__ = [
    "cell_learning_rate",
    "evaluate_accuracy",
    "file_sha256",
    "load_test_set",
    "read_set",
    "resolve_model",
    "run_cell",
]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file's bytes (identifies a set's content in the result records).

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "empty"
        >>> path.touch()
        >>> file_sha256(path)[:16]
        'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_set(path: str | os.PathLike[str], source: SetSource | None = None) -> tuple[SyntheticSet, str]:
    """The set stored in ``path`` and the SHA-256 of the bytes it was read from: what one cell needs of its set.

    Args:
        path: A file written by [`save_synthetic_set`][hmdc_modules.condensation.synthetic.save_synthetic_set], or a
            set file of another tool (see [`foreign`][hmdc_modules.evaluation.foreign]).
        source: How to read it (``None``: detect the format).

    Returns:
        ``(set, sha256)``: the set as
        [`read_any_set`][hmdc_modules.evaluation.foreign.read_any_set] returns it (images still packed), and the
        hex digest that [`CellResult.set_sha256`][hmdc_modules.evaluation.records.CellResult] records.

    Raises:
        TypeError: If ``path`` is not a string or path.
        FileNotFoundError: If there is no such file.
        ValueError: If the file is not a set in a known format, or a required option is missing (one line naming
            the file).
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a str or path, got {describe(path)}")
    return read_any_set(path, source)


def load_test_set(settings: EvalSettings, classes: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """The CIFAR-10 test images (``uint8``) and labels of ``classes``, as the settings select them.

    Args:
        settings: Gives ``data_root`` and ``test_per_class``.
        classes: Class indices to keep (``None``: all).

    Returns:
        ``(images, labels)``, see [`load_cifar10`][hmdc_modules.condensation.datasets.load_cifar10].

    Raises:
        FileNotFoundError: If the data is missing (the library's message: where it looked and how to get it).

    Shape:
        - output images: $(N, 3, 32, 32)$, ``uint8``; output labels: $(N,)$
    """
    from hmdc_modules.condensation import load_cifar10

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
    precision: str = "fp32",
) -> float:
    """Accuracy of ``model`` in evaluation mode, in percent; the model's mode is restored afterwards.

    Args:
        model: The classifier.
        images: Normalised test images, on the model's device.
        labels: Their class indices.
        image_size: Resize (bilinear) to this side first; ``None`` keeps the size.
        batch_size: Images per forward pass.
        precision: The arithmetic of the forward passes: ``"fp32"``, ``"bf16"`` (autocast) or ``"tf32"`` (CUDA
            only); see [`precision_context`][hmdc_modules.condensation.precision.precision_context].

    Returns:
        $100 \\cdot$ the fraction of images whose highest logit is their label.

    Raises:
        TypeError: If ``model`` is not a module or a tensor argument is not a tensor.
        ValueError: If the shapes do not match, the set is empty, or ``precision`` is unknown (or ``tf32`` off
            CUDA).

    Shape:
        - images: $(N, C, H, W)$; labels: $(N,)$

    Examples:
        >>> from hmdc_modules.condensation import ConvNet
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
    check_precision_device(precision, images.device)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size]
            if image_size is not None:
                x = _resize(x, image_size)
            with precision_context(precision, x.device):
                logits = model(x)
            predicted = logits.argmax(dim=1)
            correct += int((predicted == labels[start : start + batch_size].to(predicted.device)).sum())
    finally:
        model.train(was_training)
    return 100.0 * correct / images.shape[0]


def check_precision_device(precision: str, device: str | torch.device) -> str:
    """``precision`` if it is known and ``device`` can run it (``tf32`` needs CUDA), checked before any training.

    The rule and its message are [`precision_context`][hmdc_modules.condensation.precision.precision_context]'s:
    the context is entered once, with nothing inside.

    Raises:
        TypeError: If ``precision`` is not a string or ``device`` not a device.
        ValueError: If ``precision`` is unknown, or ``tf32`` is asked for on a device other than CUDA.

    Examples:
        >>> check_precision_device("bf16", "cpu")
        'bf16'
        >>> check_precision_device("tf32", "cpu")
        Traceback (most recent call last):
        ...
        ValueError: `precision` 'tf32' needs a CUDA device, got 'cpu' (use 'fp32' or 'bf16')
    """
    check_precision(precision)
    with precision_context(precision, device):
        pass
    return precision


def _batches(order: Tensor, batch_size: int) -> list[Tensor]:
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:  # BatchNorm cannot train on a single image
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


_SEED_MODULUS = 2**63 - 1
"""The modulus of the cells' stream seeds (kept so that results stay bitwise those of earlier versions)."""


def _check_test_set(test_set: object) -> tuple[Tensor, Tensor]:
    if not isinstance(test_set, tuple) or len(test_set) != 2:
        raise TypeError(f"`test_set` must be an (images, labels) tuple or None, got {describe(test_set)}")
    images, labels = test_set
    check_tensor("test_set[0]", images, ndim=4, nonempty=True)
    check_tensor("test_set[1]", labels, ndim=1)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"`test_set`: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    *,
    settings: EvalSettings,
    image_size: int,
    augment: nn.Module | None,
    use_cutmix: bool,
    order: torch.Generator,
    draws: torch.Generator,
) -> float:
    """One pass over the set in a seeded order, each batch augmented, cut-mixed and resized; the mean loss.

    The forward pass and the loss run in ``settings.precision`` (the logits are cast to float32 for the loss, so
    that soft targets are not rounded to bfloat16), the backward pass and the optimiser step outside it.
    """
    from hmdc_modules.condensation import cutmix
    from hmdc_modules.functional import soft_cross_entropy

    total, seen = torch.zeros((), device=images.device), 0
    for index in _batches(torch.randperm(images.shape[0], generator=order), settings.batch_size):
        index = index.to(images.device)
        x, y = images[index], labels[index]
        target: Tensor = y  # class indices, or soft targets (a set's learned labels)
        with torch.no_grad():
            if augment is not None:
                x = augment(x, generator=draws)
            if use_cutmix:
                x, target = cutmix(x, target, settings.num_classes, p=settings.cutmix_p, generator=draws)
            x = _resize(x, image_size)
        with precision_context(settings.precision, x.device):
            loss = soft_cross_entropy(model(x).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * x.shape[0]  # summed on the device: no synchronisation per step
        seen += x.shape[0]
    return float(total) / seen


def resolve_model(spec: ModelSpec, settings: EvalSettings) -> ModelSpec:
    """``spec`` with the settings' learning rate filled in when it gives none (``settings.lr``; the record then
    names the rate trained with).

    Examples:
        >>> from hmdc_modules.evaluation.protocols import protocol_settings
        >>> resolve_model(ModelSpec("resnet18"), protocol_settings("dsa")).learning_rate
        0.01
        >>> resolve_model(ModelSpec("resnet18"), EvalSettings()).learning_rate
        0.001
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"`spec` must be a ModelSpec, got {describe(spec)}")
    if not isinstance(settings, EvalSettings):
        raise TypeError(f"`settings` must be an EvalSettings, got {describe(settings)}")
    if spec.lr is None and settings.lr is not None:
        return dataclasses.replace(spec, lr=settings.lr)
    return spec


def cell_learning_rate(spec: ModelSpec, settings: EvalSettings, learned_lr: float | None) -> float:
    """The first-epoch learning rate of a cell: the set's learned rate when it has one and ``use_learned_lr``,
    else the model's own, else ``settings.lr``, else the model's default."""
    if learned_lr is not None and settings.use_learned_lr:
        return float(learned_lr)
    return resolve_model(spec, settings).learning_rate


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
    generator). The set file is read once ([`read_set`][hmdc_modules.evaluation.train.read_set]: the set and the
    SHA-256 of the bytes read) and decoded in memory
    ([`decode_formation`][hmdc_modules.condensation.formation.decode_formation]); the test images of the set's
    classes are normalised with the set's own mean and std.

    Args:
        cell: The set, model and seed.
        settings: The shared training and test settings.
        device: Where to train (``"auto"``: CUDA when available).
        progress: Show a tqdm bar over the epochs.
        test_set: The ``uint8`` test images and labels, as
            [`load_test_set`][hmdc_modules.evaluation.train.load_test_set] returns them for the set's classes
            (a cache for suites; ``None`` loads them).

    Returns:
        The [`CellResult`][hmdc_modules.evaluation.records.CellResult].

    Raises:
        TypeError: If an argument has the wrong type.
        FileNotFoundError: If the set file, the test data or a weights file is missing.
        ValueError: If the set is not a synthetic-set file or holds labels outside ``[0, num_classes)``, or
            ``settings.precision`` is ``tf32`` and ``device`` is not CUDA (before any training).

    Examples:
        >>> from hmdc_modules.evaluation import Cell, EvalSettings, ModelSpec, SetSpec
        >>> cell = Cell(SetSpec.from_path("runs/random_ipc1"), ModelSpec("convnet"), seed=0)  # doctest: +SKIP
        >>> result = run_cell(cell, EvalSettings(epochs=300), device="auto")  # doctest: +SKIP
        >>> result.final_accuracy, result.best_accuracy  # doctest: +SKIP
        (24.1, 25.3)
    """
    from tqdm.auto import tqdm

    from hmdc_modules.condensation import (
        decode_formation,
        decode_formation_labels,
        derive_seed,
        normalize,
    )

    if not isinstance(cell, Cell):
        raise TypeError(f"`cell` must be a Cell, got {describe(cell)}")
    if not isinstance(settings, EvalSettings):
        raise TypeError(f"`settings` must be an EvalSettings, got {describe(settings)}")
    if not isinstance(progress, bool):
        raise TypeError(f"`progress` must be a bool, got {describe(progress)}")
    device = resolve_device(device)
    check_precision_device(settings.precision, device)  # tf32 off CUDA: refused before anything is read or trained
    started = time.perf_counter()

    stored, sha256 = read_set(cell.set.path, cell.set.source)
    classes = sorted(int(c) for c in stored.labels.unique())
    if classes[0] < 0 or classes[-1] >= settings.num_classes:
        raise ValueError(
            f"set '{cell.set.path}' holds labels {classes}, outside [0, num_classes={settings.num_classes})"
        )
    test_images, test_labels = _check_test_set(load_test_set(settings, classes) if test_set is None else test_set)
    test_x = normalize(test_images, stored.mean, stored.std).to(device)
    test_y = test_labels.to(device)
    train_x = decode_formation(stored.images, stored.factor).to(device=device, dtype=torch.float32)
    soft = stored.extra.get("soft_labels")
    if isinstance(soft, Tensor):
        if soft.shape[1] != settings.num_classes:
            raise ValueError(
                f"set '{cell.set.path}' has soft labels over {soft.shape[1]} classes, expected "
                f"num_classes={settings.num_classes}"
            )
        train_y = soft.to(device=device, dtype=torch.float32)
    else:
        train_y = decode_formation_labels(stored.labels, stored.factor).to(device)
    learned = stored.extra.get("learned_lr")
    learned_lr = float(learned) if isinstance(learned, int | float) and not isinstance(learned, bool) else None

    spec, seed = resolve_model(cell.model, settings), cell.seed
    base_lr = cell_learning_rate(spec, settings, learned_lr)
    source = stored.extra.get("source", {})
    set_info = {
        "format": source.get("format", "hmdc") if isinstance(source, dict) else "hmdc",
        "normalization": source.get("normalization") if isinstance(source, dict) else None,
        "mean": list(stored.mean),
        "std": list(stored.std),
        "soft_labels": isinstance(soft, Tensor),
        "learned_lr": learned_lr,
        "lr": base_lr,
    }
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    history: list[tuple[int, float]] = []
    epoch_loss = math.nan
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = spec.build(settings.num_classes).to(device)
        optimizer = build_optimizer(
            model.parameters(), base_lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
        order = torch.Generator().manual_seed(derive_seed(seed, 0, modulus=_SEED_MODULUS))
        draws = torch.Generator().manual_seed(derive_seed(seed, 1, modulus=_SEED_MODULUS))
        augment = build_augment(settings.augment)
        use_cutmix = settings.cutmix_p > 0.0 and spec.family != "vit"
        name = f"{cell.set.name} / {spec.display_name} / seed {seed}"
        bar = tqdm(range(1, settings.epochs + 1), desc=name, unit="ep", leave=False, disable=not progress)
        for epoch in bar:
            if restarts_momentum_at(settings.lr_schedule, epoch - 1, settings.epochs):
                optimizer.state.clear()  # DC/DSA build a new optimiser at the decay
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(
                    settings.lr_schedule, base_lr, epoch - 1, settings.epochs, settings.lr_decay
                )
            epoch_loss = _train_epoch(
                model,
                optimizer,
                train_x,
                train_y,
                settings=settings,
                image_size=spec.image_size,
                augment=augment,
                use_cutmix=use_cutmix,
                order=order,
                draws=draws,
            )
            if epoch == settings.epochs or (settings.eval_every and epoch % settings.eval_every == 0):
                accuracy = evaluate_accuracy(
                    model,
                    test_x,
                    test_y,
                    image_size=spec.image_size,
                    batch_size=settings.test_batch_size,
                    precision=settings.precision,
                )
                history.append((epoch, accuracy))
                bar.set_postfix(
                    loss=f"{epoch_loss:.3f}", acc=f"{accuracy:.2f}", best=f"{max(a for _, a in history):.2f}"
                )
        bar.close()

    best_epoch, best_accuracy = max(history, key=lambda item: (item[1], -item[0]))  # the first best, on ties
    return CellResult(
        set_name=cell.set.name,
        set_path=cell.set.path,
        set_sha256=sha256,
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
        set_info=set_info,
    )

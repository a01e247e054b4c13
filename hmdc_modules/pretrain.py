"""Pretrain a classifier on an image folder or a named part of CIFAR-10 train, and write a weights file.

``python -m hmdc_modules.pretrain`` trains any [`create_model`][hmdc_modules.condensation.create_model] model from
scratch and writes ``weights.pt``, a library weights file that ``create_model(name, weights=...)``, the example's
``--weights-b`` and the evaluation's pretrained (``_ft``) pool entries read: on a machine without the Hugging Face
hub this is the stand-in for ImageNet weights. Protocol v2 pretrains on the ``P`` half of CIFAR-10 train
(``--subset P``, see [`pc_split`][hmdc_modules.condensation.splits.pc_split]) and condenses from the other half.

The recipe: SGD with Nesterov momentum 0.9 (learning rate 0.1, weight decay 5e-4) for convolutional networks, AdamW
(1e-3, weight decay 0.05) for vision transformers, a linear warm-up then a cosine schedule per step, label smoothing
0.1, and the standard CIFAR augmentation (random crop with zero padding of 1/8 of the side, horizontal flip). Images
are normalised per channel (CIFAR-10's statistics, or those of the training images for other folders) and resized
to the model's input side after augmentation when it differs from the data's.

The run folder holds ``config.json`` (the settings), ``checkpoint.pt`` (and the one it replaced,
``checkpoint.prev.pt``; both written atomically, every ``--checkpoint-every`` steps and at every epoch's end),
``log.csv`` and ``metrics.json`` (train loss/accuracy and test loss/accuracy per epoch, times) and, once finished,
``weights.pt``. An interrupted run continues with ``--resume`` exactly where its last checkpoint was (the batch
order and augmentation are derived from the seed, epoch and step); a finished run folder is refused unless
``--overwrite`` is given.

Examples:
    Pretrain ViT-Tiny with 8x8 patches at 32x32 on the P half of CIFAR-10 train::

        python -m hmdc_modules.pretrain --model vit_tiny_patch16_224 --image-size 32 --patch-size 8 \\
            --data data/cifar10 --subset P --epochs 20 --out runs/pretrain/vit_tiny_p8 --threads 1
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmdc_modules._cli_types import non_negative_float, positive_int
from hmdc_modules.condensation.precision import PRECISIONS, check_precision, precision_context

__all__ = ["PretrainConfig", "load_image_folder_split", "main", "parse_args", "pretrain"]

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
_RESUMABLE_CHANGES = frozenset({"threads", "device", "progress", "resume", "overwrite", "checkpoint_every"})
_FILES = ("config.json", "checkpoint.pt", "checkpoint.prev.pt", "log.csv", "metrics.json", "weights.pt")


@dataclass
class PretrainConfig:
    """Settings of one pretraining run (what ``config.json`` records).

    Attributes:
        model: ``create_model`` name.
        data: Data folder: CIFAR-10 (``train``/``test`` class folders or torchvision's batches) or any image folder
            with ``train/<class>/`` (and optionally ``test/<class>/``).
        out: Run folder.
        subset: ``"P"``, ``"C"`` or ``"all"``: which part of the training split to train on.
        split_seed: Seed of the P/C split.
        image_size: Model input side.
        patch_size: ViT patch size, or ``None``.
        epochs: Training epochs.
        batch_size: Batch size.
        optimizer: ``"sgd"``, ``"adamw"`` or ``"auto"`` (AdamW for ViTs, SGD otherwise).
        lr: Peak learning rate, or ``None`` for the optimiser's default.
        weight_decay: Weight decay, or ``None`` for the optimiser's default.
        warmup_epochs: Epochs of linear warm-up.
        label_smoothing: Label smoothing of the cross entropy.
        seed: Seed of the initialisation, batch order and augmentation.
        test_fraction: Share of each class held out for testing when the folder has no ``test`` split.
        limit_per_class: Train on at most this many images a class (quick trials), ``None`` for all.
        limit_test: Test on at most this many test images (spread evenly), ``None`` for all.
        checkpoint_every: Write a checkpoint every this many steps (and at each epoch's end).
        threads: CPU threads, ``None`` to leave PyTorch's default.
        precision: Arithmetic of the forward passes and the loss: ``"fp32"``, ``"bf16"`` (autocast; the weights, the
            optimiser state and the backward pass's results stay float32) or ``"tf32"`` (CUDA only).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        progress: Show a progress bar.
        resume: Continue the run in ``out``.
        overwrite: Replace a run in ``out``.
    """

    model: str
    data: str
    out: str
    subset: str = "all"
    split_seed: int = 20240
    image_size: int = 32
    patch_size: int | None = None
    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "auto"
    lr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    seed: int = 0
    test_fraction: float = 0.1
    limit_per_class: int | None = None
    limit_test: int | None = None
    checkpoint_every: int = 50
    threads: int | None = None
    precision: str = "fp32"
    device: str = "auto"
    progress: bool = True
    resume: bool = False
    overwrite: bool = False


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------


def _fraction(text: str) -> float:
    value = non_negative_float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hmdc_modules.pretrain",
        description="Pretrain a create_model model on an image folder or a part of CIFAR-10 train; writes weights.pt.",
    )
    parser.add_argument("--model", required=True, help="create_model name: 'convnet' or a timm model name")
    parser.add_argument("--data", required=True, help="data folder (CIFAR-10, or any folder with train/<class>/)")
    parser.add_argument("--out", required=True, help="run folder (config, checkpoints, logs, weights.pt)")
    parser.add_argument("--subset", default="all", choices=("P", "C", "all"), help="part of the P/C split to train on")
    parser.add_argument("--split-seed", type=int, default=20240, help="seed of the P/C split (protocol v2: 20240)")
    parser.add_argument("--image-size", type=positive_int, default=32, help="model input side (default 32)")
    parser.add_argument("--patch-size", type=positive_int, default=None, help="ViT patch size")
    parser.add_argument("--epochs", type=positive_int, default=20)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--optimizer", default="auto", choices=("auto", "sgd", "adamw"))
    parser.add_argument("--lr", type=non_negative_float, default=None, help="peak learning rate (sgd 0.1, adamw 1e-3)")
    parser.add_argument("--weight-decay", type=non_negative_float, default=None, help="sgd 5e-4, adamw 0.05")
    parser.add_argument("--warmup-epochs", type=non_negative_float, default=1.0)
    parser.add_argument("--label-smoothing", type=non_negative_float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=_fraction, default=0.1, help="held out a class if no test/ folder")
    parser.add_argument("--limit-per-class", type=positive_int, default=None, help="quick trials: images a class")
    parser.add_argument("--limit-test", type=positive_int, default=None, help="quick trials: test images")
    parser.add_argument("--checkpoint-every", type=positive_int, default=50, help="steps between checkpoints")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument(
        "--precision", default="fp32", choices=PRECISIONS, help="fp32, bf16 (autocast) or tf32 (CUDA); default fp32"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    group.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> PretrainConfig:
    """Parse command-line arguments into a [`PretrainConfig`][hmdc_modules.pretrain.PretrainConfig].

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The settings.

    Examples:
        >>> parse_args(["--model", "convnet", "--data", "d", "--out", "o", "--subset", "P"]).subset
        'P'
    """
    namespace = _parser().parse_args(argv)
    return PretrainConfig(**vars(namespace))


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def _class_folders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def load_image_folder_split(
    folder: str | os.PathLike[str],
    side: int,
    *,
    classes: Sequence[str] | None = None,
    limit_per_class: int | None = None,
) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """Decode ``folder/<class>/*`` into one ``uint8`` tensor at ``side`` x ``side`` (RGB, resized where needed).

    Args:
        folder: A folder of class folders (hidden folders and files with other extensions are ignored).
        side: Side every image is resized to (bilinear), unless it already has it.
        classes: Class folder names in label order; ``None`` takes the sorted folder names.
        limit_per_class: Keep at most the first this many files (sorted by name) of each class.

    Returns:
        ``(images, labels, classes)``: ``images`` $(N, 3, side, side)$ ``uint8``, ``labels`` $(N,)$ ``int64``.

    Raises:
        FileNotFoundError: If ``folder`` is missing, holds no class folder, or a named class folder is missing.
        ValueError: If a class folder holds no image, or an image cannot be decoded (the message names it).
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"`data`: no folder {str(folder)!r}")
    names = tuple(d.name for d in _class_folders(folder)) if classes is None else tuple(classes)
    if not names:
        raise FileNotFoundError(f"`data`: {str(folder)!r} holds no class folders")
    images: list[Tensor] = []
    labels: list[int] = []
    for index, name in enumerate(names):
        class_folder = folder / name
        if not class_folder.is_dir():
            raise FileNotFoundError(f"`data`: class folder {str(class_folder)!r} is missing")
        files = _image_files(class_folder)[:limit_per_class]
        if not files:
            raise ValueError(f"`data`: class folder {str(class_folder)!r} holds no .png/.jpg/.jpeg/.bmp/.webp image")
        for path in files:
            try:
                with Image.open(path) as image:
                    rgb = image.convert("RGB")
                    if rgb.size != (side, side):
                        rgb = rgb.resize((side, side), Image.BILINEAR)
                    pixels = np.asarray(rgb, dtype=np.uint8).copy()
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
                raise ValueError(f"`data`: image file {str(path)!r} could not be decoded: {error}") from error
            images.append(torch.from_numpy(pixels).permute(2, 0, 1))
            labels.append(index)
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.int64), names


def _is_cifar10(root: Path) -> bool:
    from hmdc_modules.condensation import CIFAR10_CLASSES

    if (root / "cifar-10-batches-py").is_dir():
        return True
    train = root / "train"
    return train.is_dir() and sorted(d.name for d in _class_folders(train)) == sorted(CIFAR10_CLASSES)


@dataclass
class _Data:
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str


def _limit(labels: Tensor, per_class: int | None) -> Tensor:
    keep = [torch.nonzero(labels == c).flatten()[:per_class] for c in labels.unique().tolist()]
    return torch.cat(keep).sort().values


def _load_data(cfg: PretrainConfig) -> _Data:
    from hmdc_modules.condensation import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, load_cifar10
    from hmdc_modules.condensation.splits import pc_split, subset_indices

    root = Path(cfg.data).expanduser()
    if _is_cifar10(root):
        train_x, train_y = load_cifar10(root, "train", progress=cfg.progress)
        test_x, test_y = load_cifar10(root, "test", progress=cfg.progress)
        classes: tuple[str, ...] = CIFAR10_CLASSES
        mean, std = tuple(CIFAR10_MEAN), tuple(CIFAR10_STD)
        kind = "CIFAR-10"
    else:
        train_dir = root / "train" if (root / "train").is_dir() else root
        train_x, train_y, classes = load_image_folder_split(train_dir, cfg.image_size)
        if (root / "test").is_dir():
            test_x, test_y, _ = load_image_folder_split(root / "test", cfg.image_size, classes=classes)
        else:
            held_out, kept = pc_split(train_y, seed=cfg.split_seed + 1, fraction=cfg.test_fraction)
            test_x, test_y = train_x[held_out], train_y[held_out]
            train_x, train_y = train_x[kept], train_y[kept]
        pixels = train_x.float().div_(255)
        mean = tuple(float(v) for v in pixels.mean(dim=(0, 2, 3)))
        std = tuple(max(float(v), 1e-3) for v in pixels.std(dim=(0, 2, 3)))
        kind = f"image folder ({len(classes)} classes)"
    chosen = subset_indices(train_y, cfg.subset, seed=cfg.split_seed)  # type: ignore[arg-type]
    train_x, train_y = train_x[chosen], train_y[chosen]
    if cfg.limit_per_class is not None:
        keep = _limit(train_y, cfg.limit_per_class)
        train_x, train_y = train_x[keep], train_y[keep]
    if cfg.limit_test is not None and cfg.limit_test < len(test_y):
        keep = torch.linspace(0, len(test_y) - 1, cfg.limit_test).round().long()
        test_x, test_y = test_x[keep], test_y[keep]
    description = f"{kind}, subset {cfg.subset}: {len(train_y)} training and {len(test_y)} test images"
    return _Data(train_x, train_y, test_x, test_y, classes, mean, std, description)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def _augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop with zero padding of side/8, then a random horizontal flip, per image."""
    batch, _, side, _ = images.shape
    pad = max(1, side // 8)
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5
    out = torch.empty_like(images)
    for i in range(batch):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy : dy + side, dx : dx + side]
        out[i] = crop.flip(-1) if bool(flips[i]) else crop
    return out


def _prepare(images: Tensor, mean: Tensor, std: Tensor, side: int, device: torch.device) -> Tensor:
    x = images.to(device, non_blocking=True).float().div_(255)
    x = (x - mean) / std
    if x.shape[-1] != side:
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x


def _is_transformer(model: nn.Module) -> bool:
    return any(isinstance(getattr(m, "fused_attn", None), bool) for m in model.modules())


def _optimizer(cfg: PretrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    kind = cfg.optimizer if cfg.optimizer != "auto" else ("adamw" if _is_transformer(model) else "sgd")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(("pos_embed", "cls_token")) else decay).append(p)
    if kind == "adamw":
        wd = 0.05 if cfg.weight_decay is None else cfg.weight_decay
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=1e-3 if cfg.lr is None else cfg.lr, betas=(0.9, 0.999))
    wd = 5e-4 if cfg.weight_decay is None else cfg.weight_decay
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=0.1 if cfg.lr is None else cfg.lr, momentum=0.9, nesterov=True)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def _evaluate(model: nn.Module, data: _Data, mean: Tensor, std: Tensor, cfg: PretrainConfig, device: torch.device):
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(data.test_labels), 256):
        x = _prepare(data.test_images[start : start + 256], mean, std, cfg.image_size, device)
        y = data.test_labels[start : start + 256].to(device)
        with precision_context(cfg.precision, device):
            logits = model(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train()
    n = len(data.test_labels)
    return loss_sum / n, correct / n


def _derive(seed: int, *counters: int) -> int:
    from hmdc_modules.condensation import derive_seed

    return derive_seed(seed, *counters)


def _write_logs(out: Path, history: list[dict[str, Any]], status: str, extra: dict[str, Any]) -> None:
    from hmdc_modules.condensation import atomic_write_text

    if history:
        buffer = io.StringIO()
        fields = list(dict.fromkeys(key for row in history for key in row))  # rows of older runs may lack a column
        writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(out / "log.csv", buffer.getvalue())
    atomic_write_text(out / "metrics.json", json.dumps({"status": status, **extra, "epochs": history}, indent=1) + "\n")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (finished or unfinished run there, settings differ on resume)."""


def _check_run_folder(cfg: PretrainConfig) -> str:
    """``"new"``, ``"resume"`` or ``"overwrite"``; raises when the folder's state does not allow the request."""
    out = Path(cfg.out).expanduser()
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"`--out`: {str(out)!r} exists and is not a folder")
    present = [name for name in _FILES if (out / name).exists()]
    checkpointed = any(name.startswith("checkpoint") or name == "weights.pt" for name in present)
    if not checkpointed:
        if cfg.resume:
            raise RunFolderError(f"`--resume`: {str(out)!r} holds no run to resume (no checkpoint.pt)")
        # Nothing to lose: at most the config of a run stopped before its first checkpoint.
        return "overwrite" if present else "new"
    finished = (out / "weights.pt").is_file()
    if cfg.overwrite:
        return "overwrite"
    if finished:
        raise RunFolderError(
            f"`--out`: {str(out)!r} holds a finished run (weights.pt); pass --overwrite to replace it or choose "
            "another --out"
        )
    if not cfg.resume:
        raise RunFolderError(
            f"`--out`: {str(out)!r} holds an unfinished run; pass --resume to continue it or --overwrite to replace it"
        )
    recorded_path = out / "config.json"
    if not recorded_path.is_file():
        raise RunFolderError(f"`--resume`: {str(out)!r} has no config.json; pass --overwrite to start afresh")
    recorded = {"precision": "fp32"} | json.loads(recorded_path.read_text())  # runs from before --precision: fp32
    mine = asdict(cfg)
    differing = sorted(k for k in mine if k not in _RESUMABLE_CHANGES and recorded.get(k) != mine[k])
    if differing:
        detail = ", ".join(f"{k}: run has {recorded.get(k)!r}, got {mine[k]!r}" for k in differing)
        raise RunFolderError(f"`--resume`: the settings differ from the run's config.json ({detail})")
    return "resume"


def _validate(cfg: PretrainConfig) -> None:
    """Every check that can be made before anything is written or loaded at length."""
    import timm

    if cfg.model.lower() != "convnet" and not timm.is_model(cfg.model):
        raise ValueError(f"`--model` must be 'convnet' or a timm model name, got {cfg.model!r}")
    root = Path(cfg.data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"`--data`: no folder {str(root)!r}")
    from hmdc_modules.distributed import resolve_device

    device = resolve_device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`--device` {cfg.device!r}: CUDA is not available here; use --device cpu or auto")
    check_precision(cfg.precision, "--precision")
    if cfg.precision == "tf32" and device.type != "cuda":
        raise ValueError(f"`--precision` 'tf32' needs a CUDA device, got {device.type!r} (use fp32 or bf16)")
    from hmdc_modules.condensation import create_model

    # Builds the model once on the CPU and runs one image through it: catches an incompatible
    # --image-size/--patch-size before anything is written.
    model = create_model(cfg.model, 2, image_size=cfg.image_size, patch_size=cfg.patch_size).eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
    except (AssertionError, RuntimeError, ValueError) as error:
        detail = " ".join(str(error).split())[:200]
        raise ValueError(
            f"`--image-size` {cfg.image_size} / `--patch-size` {cfg.patch_size} do not suit {cfg.model!r}: {detail}"
        ) from error


def pretrain(cfg: PretrainConfig) -> Path:
    """Run (or resume) one pretraining run and return the path of its weights file.

    Args:
        cfg: The settings (see [`PretrainConfig`][hmdc_modules.pretrain.PretrainConfig]).

    Returns:
        ``cfg.out / "weights.pt"``.

    Raises:
        RunFolderError: If the run folder holds a finished run (without ``overwrite``), an unfinished one (without
            ``resume`` or ``overwrite``), or settings that differ from the run to resume.
        ValueError: If a setting is invalid (model name, device, sizes).
        FileNotFoundError: If the data folder is missing.
    """
    from tqdm.auto import tqdm

    from hmdc_modules.condensation import create_model, load_latest_checkpoint, save_checkpoint
    from hmdc_modules.condensation.models import save_weights_file

    _validate(cfg)
    mode = _check_run_folder(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    from hmdc_modules.distributed import resolve_device

    device = resolve_device(cfg.device)
    data = _load_data(cfg)

    out = Path(cfg.out).expanduser()
    if mode == "overwrite":
        for name in _FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(_derive(cfg.seed, 0))
    model = create_model(cfg.model, len(data.classes), image_size=cfg.image_size, patch_size=cfg.patch_size)
    for module in model.modules():  # create_model switches fused attention off for gradient matching
        if isinstance(getattr(module, "fused_attn", None), bool):
            module.fused_attn = True
    model.to(device).train()
    optimizer = _optimizer(cfg, model)
    steps_per_epoch = math.ceil(len(data.train_labels) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)

    step, history, elapsed = 0, [], 0.0
    if mode == "resume":
        loaded = load_latest_checkpoint(out / "checkpoint.pt")
        if loaded.message:
            print(loaded.message, file=sys.stderr, flush=True)
        state = loaded.state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, history, elapsed = int(state["step"]), list(state["history"]), float(state["elapsed"])
        print(f"resuming at step {step} of {total_steps} (epoch {step // steps_per_epoch + 1})", flush=True)
    else:
        from hmdc_modules.condensation import atomic_write_text

        atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=1) + "\n")
    print(f"{cfg.model} at {cfg.image_size}x{cfg.image_size} on {data.description}; device {device}", flush=True)

    def checkpoint() -> None:
        save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "history": history,
                "elapsed": elapsed,
            },
            out / "checkpoint.pt",
        )

    def finish_epoch(epoch: int, seconds: float, pending: float, loss_sum: float, correct: int, seen: int) -> None:
        nonlocal elapsed, cpu_started
        test_started = time.perf_counter()
        test_loss, test_accuracy = _evaluate(model, data, mean, std, cfg, device)
        test_seconds = time.perf_counter() - test_started
        elapsed += pending + test_seconds
        row = {
            "epoch": epoch + 1,
            "train_loss": round(loss_sum / seen, 5) if seen else float("nan"),
            "train_accuracy": round(correct / seen, 5) if seen else float("nan"),
            "train_images": seen,
            "test_loss": round(test_loss, 5),
            "test_accuracy": round(test_accuracy, 5),
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": round(seconds, 2),
            "test_seconds": round(test_seconds, 2),
            "cpu_seconds": round(time.process_time() - cpu_started, 2),
            "elapsed_seconds": round(elapsed, 2),
        }
        cpu_started = time.process_time()
        history.append(row)
        checkpoint()
        _write_logs(out, history, "running", {"model": cfg.model, "data": data.description})
        print(
            f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.3f} acc {row['train_accuracy']:.3f}, "
            f"test loss {test_loss:.3f} acc {test_accuracy:.4f}, {seconds + test_seconds:.0f} s "
            f"({row['cpu_seconds']:.0f} s CPU)",
            flush=True,
        )

    cpu_started = time.process_time()  # CPU time of this process: the cost of an epoch on a shared machine
    if mode == "resume":
        _write_logs(out, history, "running", {"model": cfg.model, "data": data.description})
    if len(history) < step // steps_per_epoch:  # interrupted between an epoch's last step and its evaluation
        finish_epoch(step // steps_per_epoch - 1, 0.0, 0.0, 0.0, 0, 0)
    interactive = sys.stderr.isatty()
    while step < total_steps:
        epoch = step // steps_per_epoch
        seed = _derive(cfg.seed, 1, epoch)
        order = torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(seed))
        first = step - epoch * steps_per_epoch
        bar = tqdm(
            range(first, steps_per_epoch),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=not cfg.progress,
            mininterval=0.5 if interactive else 30.0,
            initial=first,
            total=steps_per_epoch,
        )
        started, seconds, loss_sum, correct, seen = time.perf_counter(), 0.0, 0.0, 0, 0
        for index in bar:
            generator = torch.Generator().manual_seed(_derive(cfg.seed, 2, epoch, index))
            chosen = order[index * cfg.batch_size : (index + 1) * cfg.batch_size]
            images = _augment(data.train_images[chosen], generator)
            x = _prepare(images, mean, std, cfg.image_size, device)
            y = data.train_labels[chosen].to(device)
            factor = _lr_factor(step, total_steps, warmup_steps)
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
            with precision_context(cfg.precision, device):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(f"the training loss became {float(loss.detach())} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
            if step % cfg.checkpoint_every == 0:
                now = time.perf_counter()
                seconds += now - started
                elapsed += now - started
                started = now
                checkpoint()
        bar.close()
        pending = time.perf_counter() - started
        finish_epoch(epoch, seconds + pending, pending, loss_sum, correct, seen)

    final = history[-1]["test_accuracy"] if history else None
    best = max((row["test_accuracy"] for row in history), default=None)
    extra = {
        "data": data.description,
        "subset": cfg.subset,
        "split_seed": cfg.split_seed,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "test_accuracy": final,
        "best_test_accuracy": best,
        "elapsed_seconds": round(elapsed, 2),
    }
    weights = save_weights_file(
        out / "weights.pt",
        model.cpu(),
        name=cfg.model,
        num_classes=len(data.classes),
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        mean=data.mean,
        std=data.std,
        classes=data.classes,
        extra=extra,
    )
    _write_logs(out, history, "finished", {"model": cfg.model, **extra})
    print(f"wrote {weights} (final test accuracy {final:.4f}, best {best:.4f})", flush=True)
    return weights


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m hmdc_modules.pretrain --help``.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 on success, 2 for a bad setting or run folder (one line on stderr).
    """
    cfg = parse_args(argv)
    try:
        pretrain(cfg)
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"pretrain: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

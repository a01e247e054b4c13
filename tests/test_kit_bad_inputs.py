"""Bad inputs to the condensation kit: one clear ValueError/TypeError naming the argument, raised outside torch."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from hmdc_modules.condensation import (
    CIFAR10_CLASSES,
    CutMix,
    DifferentiableAugment,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    cutmix,
    decode_formation,
    decode_formation_labels,
    denormalize,
    derive_seed,
    embed,
    encode_formation,
    kmeans,
    load_checkpoint,
    load_cifar10,
    load_image_folder,
    load_latest_checkpoint,
    load_synthetic_set,
    nearest_to_centroids,
    normalize,
    parse_classes,
    plot_balancer_history,
    plot_metrics,
    read_synthetic_set,
    save_checkpoint,
    save_figure,
    save_image_grid,
    save_synthetic_set,
    select_representatives,
)

TORCH_DIR = os.path.dirname(torch.__file__)
IMAGES = torch.zeros(4, 3, 8, 8)
LABELS = torch.tensor([0, 0, 1, 1])
STATS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "factor": 2, "ipc": 2, "iteration": 0}


def _set(tmp: Path, **change: Any) -> None:
    values = {"images": IMAGES, "labels": LABELS, **STATS, **change}
    save_synthetic_set(tmp / "set.pt", **values)


# (case id, call given a temporary folder, expected error type, the argument the message must name)
CASES: list[tuple[str, Callable[[Path], Any], type[Exception], str]] = [
    # seeding
    ("seed-str", lambda t: derive_seed("1"), TypeError, "seed"),
    ("seed-bool", lambda t: derive_seed(True), TypeError, "seed"),
    ("seed-float-counter", lambda t: derive_seed(1, 2.0), TypeError, "counters[0]"),
    ("seed-modulus-1", lambda t: derive_seed(1, 2, modulus=1), ValueError, "modulus"),
    # io
    ("write-bytes-str", lambda t: atomic_write_bytes(t / "a", "text"), TypeError, "data"),
    ("write-text-bytes", lambda t: atomic_write_text(t / "a", b"x"), TypeError, "text"),
    ("write-into-folder", lambda t: atomic_write_text(t, "x"), ValueError, "path"),
    ("write-path-int", lambda t: atomic_write(123, lambda h: None), TypeError, "path"),
    ("write-not-callable", lambda t: atomic_write(t / "a", "no"), TypeError, "write"),
    ("checkpoint-list", lambda t: save_checkpoint([1], t / "c.pt"), TypeError, "state"),
    ("checkpoint-keep-str", lambda t: save_checkpoint({}, t / "c.pt", keep_previous="yes"), TypeError, "keep_previous"),
    ("checkpoint-load-int", lambda t: load_checkpoint(7), TypeError, "path"),
    ("checkpoint-latest-folder", lambda t: load_latest_checkpoint(t), ValueError, "path"),
    ("figure-str", lambda t: save_figure("figure", t / "f.png"), TypeError, "figure"),
    ("figure-dpi-0", lambda t: save_figure(Figure(), t / "f.png", dpi=0), TypeError, "dpi"),
    # datasets
    ("classes-int", lambda t: parse_classes(3, CIFAR10_CLASSES), TypeError, "classes"),
    ("classes-names-str", lambda t: parse_classes("a", "abc"), TypeError, "class_names"),
    ("classes-foo", lambda t: parse_classes("foo", CIFAR10_CLASSES), ValueError, "classes"),
    ("classes-range", lambda t: parse_classes("12", CIFAR10_CLASSES), ValueError, "classes"),
    ("folder-split", lambda t: load_image_folder(t, "val"), ValueError, "split"),
    ("folder-classes-float", lambda t: load_image_folder(t, classes=[1.0]), TypeError, "classes"),
    ("folder-per-class-0", lambda t: load_image_folder(t, per_class=0), ValueError, "per_class"),
    ("folder-root-int", lambda t: load_image_folder(5), TypeError, "root"),
    ("cifar-progress-str", lambda t: load_cifar10(t, progress="no"), TypeError, "progress"),
    ("cifar-classes-text", lambda t: load_cifar10(t, classes="3,8"), TypeError, "classes"),
    # normalisation
    ("normalize-int32", lambda t: normalize(torch.zeros(1, 3, 2, 2, dtype=torch.int32)), TypeError, "images"),
    ("normalize-2d", lambda t: normalize(torch.zeros(2, 2)), ValueError, "images"),
    ("normalize-mean-len", lambda t: normalize(IMAGES, mean=(0.5,)), ValueError, "mean"),
    ("denormalize-std-0", lambda t: denormalize(IMAGES, std=(0.0, 1.0, 1.0)), ValueError, "std"),
    ("denormalize-array", lambda t: denormalize(np.zeros((1, 3, 2, 2))), TypeError, "x"),
    # synthetic sets
    ("set-images-3d", lambda t: _set(t, images=torch.zeros(3, 8, 8)), ValueError, "images"),
    ("set-labels-float", lambda t: _set(t, labels=LABELS.float()), TypeError, "labels"),
    ("set-images-nan", lambda t: _set(t, images=torch.full((4, 3, 8, 8), float("nan"))), ValueError, "images"),
    ("set-factor-3", lambda t: _set(t, factor=3), ValueError, "factor"),
    ("set-ipc-0", lambda t: _set(t, ipc=0), ValueError, "ipc"),
    ("set-extra-object", lambda t: _set(t, extra={"model": nn.Linear(1, 1)}), TypeError, "extra['model']"),
    ("set-read-int", lambda t: read_synthetic_set(42), TypeError, "path"),
    ("set-load-flag", lambda t: load_synthetic_set(t / "set.pt", denormalized="no"), TypeError, "denormalized"),
    # formation
    ("encode-factor-0", lambda t: encode_formation(IMAGES, 0), ValueError, "factor"),
    ("encode-batch", lambda t: encode_formation(torch.zeros(3, 3, 8, 8), 2), ValueError, "images"),
    ("decode-odd-size", lambda t: decode_formation(torch.zeros(1, 3, 7, 7), 2), ValueError, "images"),
    ("decode-labels-list", lambda t: decode_formation_labels([0, 1], 2), TypeError, "labels"),
    # selection
    ("kmeans-k-0", lambda t: kmeans(torch.rand(5, 2), 0), ValueError, "k"),
    ("kmeans-1d", lambda t: kmeans(torch.rand(5), 2), ValueError, "x"),
    ("nearest-width", lambda t: nearest_to_centroids(torch.rand(5, 2), torch.rand(2, 3)), ValueError, "centroids"),
    ("select-numpy", lambda t: select_representatives(np.zeros((4, 2)), 2), TypeError, "embeddings"),
    ("embed-batch-0", lambda t: embed(nn.Identity(), IMAGES, 0), ValueError, "batch_size"),
    # augmentation
    ("augment-geometric-op", lambda t: DifferentiableAugment(geometric=("spin",)), ValueError, "geometric"),
    ("augment-geometric-str", lambda t: DifferentiableAugment(geometric="crop"), TypeError, "geometric"),
    ("augment-crop-ratio", lambda t: DifferentiableAugment(crop_ratio=-0.5), ValueError, "crop_ratio"),
    ("augment-images-3d", lambda t: DifferentiableAugment()(torch.zeros(3, 8, 8), seed=0), ValueError, "x"),
    ("cutmix-beta", lambda t: cutmix(IMAGES, LABELS, 2, beta=-1.0), ValueError, "beta"),
    ("cutmix-module-p", lambda t: CutMix(2, p=1.5), ValueError, "p"),
    # plots
    ("grid-uint8", lambda t: save_image_grid(IMAGES.byte(), t / "g.png"), TypeError, "images"),
    ("grid-scale-0", lambda t: save_image_grid(IMAGES, t / "g.png", scale=0), ValueError, "scale"),
    ("grid-names-str", lambda t: save_image_grid(IMAGES[None], t / "g", class_names="cat"), TypeError, "class_names"),
    ("grid-mean-len", lambda t: save_image_grid(IMAGES, t / "g.png", mean=(0.5,), std=(0.5,)), ValueError, "mean"),
    ("balancer-list", lambda t: plot_balancer_history([], t / "b.png"), TypeError, "history"),
    ("metrics-columns-str", lambda t: plot_metrics(t / "m.csv", t / "m.png", columns="loss"), TypeError, "columns"),
]


@pytest.mark.parametrize(("call", "error", "argument"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error(
    call: Callable[[Path], Any], error: type[Exception], argument: str, tmp_path: Path
) -> None:
    (tmp_path / "m.csv").write_text("global_step,loss\n0,1.0\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(error) as info:
        call(tmp_path)
    message = str(info.value)
    assert f"`{argument}`" in message, message
    assert "\n" not in message, message
    last = str(info.traceback[-1].path)
    assert not last.startswith(TORCH_DIR), f"raised inside torch ({last}): {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written on a refused call


def test_there_are_at_least_twenty_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) == len(CASES) >= 20

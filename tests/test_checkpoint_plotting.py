"""Atomic checkpoints, and the figures a run writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmdc_modules import GradientBalancer
from hmdc_modules.condensation import (
    load_checkpoint,
    plot_balancer_history,
    plot_metrics,
    save_checkpoint,
    save_image_grid,
)


def test_checkpoint_round_trip_and_weights_only(tmp_path: Path) -> None:
    state = {"x": torch.arange(6.0).view(2, 3), "step": 4, "names": ["a", "b"], "nested": {"lr": 0.1}}
    path = save_checkpoint(state, tmp_path / "sub" / "ckpt.pt")
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["x"], state["x"]) and loaded["step"] == 4 and loaded["nested"] == {"lr": 0.1}
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temporary file left


def test_failed_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint({"v": 1}, tmp_path / "ckpt.pt")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"v": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="`state`"):
        save_checkpoint([1, 2], tmp_path / "x.pt")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="checkpoint dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_image_grid_has_one_row_per_class(tmp_path: Path) -> None:
    images = torch.zeros(3, 2, 3, 8, 8)  # 3 classes, 2 images each, in [0, 1]
    images[1] = 1.0
    path = save_image_grid(images, tmp_path / "grid.png")
    grid = torch.from_numpy(np.array(Image.open(path).convert("L"))).int()
    assert grid.shape == (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)  # torchvision's 2-pixel padding
    row = lambda r: grid[2 + r * 10 : 2 + r * 10 + 8, 2:10]  # noqa: E731
    assert int(row(0).max()) == 0 and int(row(1).min()) == 255 and int(row(2).max()) == 0


def test_image_grid_undoes_normalisation(tmp_path: Path) -> None:
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    path = save_image_grid(torch.full((1, 3, 4, 4), 2.0), tmp_path / "g.png", mean=mean, std=std)  # pixel = 1.0
    assert int(np.asarray(Image.open(path).convert("L")).min()) == 255
    with pytest.raises(ValueError, match="`mean` and `std`"):
        save_image_grid(torch.zeros(1, 3, 4, 4), tmp_path / "h.png", mean=mean)
    with pytest.raises(ValueError, match="`images`"):
        save_image_grid(torch.zeros(3, 4, 4), tmp_path / "h.png")


def test_balancer_plot_from_history(tmp_path: Path) -> None:
    balancer = GradientBalancer(2, num_groups=2, interval=1, loss_names=["small", "large"])
    x = torch.ones(4, requires_grad=True)
    for step in range(3):
        for group in range(2):
            balancer([x.sum() * 1e-3, x.sum() * (step + 1)], x, group=group)
    path = plot_balancer_history(balancer.history_arrays(), tmp_path / "b.png", loss_names=["small", "large"])
    assert Image.open(path).size[0] > 300
    with pytest.raises(ValueError, match="`history`"):
        plot_balancer_history({"group": torch.zeros(0)}, tmp_path / "c.png")


def test_metrics_plot_and_its_errors(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("global_step,gm_a,md\n0,2.0,0.5\n1,1.0,0.25\n")
    path = plot_metrics(csv_path, tmp_path / "losses.png", columns=["gm_a", "md"])
    assert Image.open(path).size == (680, 320)  # two 3.4 x 3.2 inch panels at 100 dpi
    with pytest.raises(ValueError, match="'nope' is not a column"):
        plot_metrics(csv_path, tmp_path / "x.png", columns=["nope"])
    with pytest.raises(ValueError, match="`columns`"):
        plot_metrics(csv_path, tmp_path / "x.png", columns=[])
    with pytest.raises(FileNotFoundError, match="`metrics_csv`"):
        plot_metrics(tmp_path / "missing.csv", tmp_path / "x.png", columns=["md"])


# ------------------------------------------------------------------------------------------------------------------
# Readable figures (#14): class names on the grid, decoded images of at least 32 px, integer ticks, log weights
# ------------------------------------------------------------------------------------------------------------------


def test_grid_decodes_multi_formation_to_32_px_and_labels_rows(tmp_path: Path) -> None:
    from hmdc_modules.condensation import CIFAR10_CLASSES

    packed = torch.rand(10, 2, 3, 32, 32)  # 10 classes, 2 stored images each, factor 2
    plain = Image.open(save_image_grid(packed, tmp_path / "plain.png", factor=2))
    assert plain.size == (8 * 32 + 9 * 2, 10 * 32 + 11 * 2)  # 8 decoded 32-px images per class row
    labelled = Image.open(save_image_grid(packed, tmp_path / "g.png", factor=2, class_names=CIFAR10_CLASSES))
    margin = labelled.size[0] - plain.size[0]
    assert labelled.size[1] == plain.size[1] and margin > 20
    left = np.asarray(labelled.convert("L"))[:, :margin]
    for row in range(10):  # every row's label is drawn in its own band
        band = left[2 + row * 34 : 2 + row * 34 + 32]
        assert int(band.min()) < 128, f"no label drawn for row {row}"
    assert np.array_equal(np.asarray(labelled.convert("RGB"))[:, margin:], np.asarray(plain.convert("RGB")))


def test_grid_enlarges_small_decoded_tiles(tmp_path: Path) -> None:
    path = save_image_grid(torch.rand(1, 1, 3, 8, 8), tmp_path / "g.png", factor=2)  # 4 tiles of 8 px
    assert Image.open(path).size == (4 * 32 + 5 * 2, 32 + 2 * 2)


def test_grid_class_names_must_match_the_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`class_names` must hold one str per grid row \(3\)"):
        save_image_grid(torch.rand(3, 1, 3, 8, 8), tmp_path / "g.png", class_names=["a", "b"])
    with pytest.raises(ValueError, match="divisible by `factor`=3"):
        save_image_grid(torch.rand(3, 1, 3, 8, 8), tmp_path / "g.png", factor=3)
    assert not (tmp_path / "g.png").exists()


def _capture_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    from hmdc_modules.condensation import io as kit_io
    from hmdc_modules.condensation import plots

    figures: list = []

    def keep(figure, path, **kwargs):
        figures.append(figure)
        return kit_io.save_figure(figure, path, **kwargs)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def _xticks_after_drawing(figure) -> list[list[float]]:
    figure.canvas.draw()
    return [[float(t) for t in ax.get_xticks()] for ax in figure.axes]


def test_balancer_plot_has_integer_rounds_and_log_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = _capture_figures(monkeypatch)
    history = {
        "group": torch.tensor([0, 1, 0, 1, 0, 1]),
        "magnitudes": torch.tensor([[1e-3, 2.0]] * 6),
        "weights": torch.tensor([[1e-3, 0.5]] * 6),
    }
    plot_balancer_history(history, tmp_path / "b.png", loss_names=["gm", "md"])
    (figure,) = figures
    for ax, ticks in zip(figure.axes, _xticks_after_drawing(figure), strict=True):
        assert ax.get_yscale() == "log"
        assert ticks and all(t.is_integer() for t in ticks), ticks
    with pytest.raises(ValueError, match="`loss_names` must hold one name per loss"):
        plot_balancer_history(history, tmp_path / "c.png", loss_names=["gm"])


def test_metrics_plot_has_integer_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = _capture_figures(monkeypatch)
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("global_step,loss\n0,2.0\n1,1.0\n2,0.5\n")
    plot_metrics(csv_path, tmp_path / "losses.png", columns=["loss"])
    (ticks,) = _xticks_after_drawing(figures[0])
    assert ticks and all(t.is_integer() for t in ticks), ticks
    csv_path.write_text("global_step,loss\n0,2.0\nnot-a-number,1.0\n")
    with pytest.raises(ValueError, match=r"'global_step' of metrics\.csv holds a value that is not a number"):
        plot_metrics(csv_path, tmp_path / "x.png", columns=["loss"])

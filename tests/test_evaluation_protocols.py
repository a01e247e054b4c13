"""Named evaluation protocols: each one's optimiser, schedule and augmentation mode, and their command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hmdc_modules.evaluation.train as training
from hmdc_modules.condensation import DifferentiableAugment
from hmdc_modules.evaluate import build_parser, main
from hmdc_modules.evaluation import Cell, EvalSettings, ModelSpec, SetSpec, run_cell
from hmdc_modules.evaluation.augmentation import (
    DSA_OPS,
    OneOpAugment,
    build_augment,
    build_optimizer,
    learning_rate_at,
    restarts_momentum_at,
)
from hmdc_modules.evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOLS, protocol_settings

# What each protocol must be, written out from its source (see the protocols module):
# (epochs, lr of a ConvNet and a ResNet18, lr at epochs 0 / E/2-1 / E/2 as factors, batch, augment, cutmix, metric)
EXPECTED = {
    "hmdc": (2000, (1e-2, 1e-3), (1.0, 1.0, 1.0), 128, "idc", 0.5, "best", 10),
    "dsa": (1000, (1e-2, 1e-2), (1.0, 1.0, 0.1), 256, "dsa", 0.0, "final", 0),
    "ddranking": (1000, (1e-2, 1e-2), (1.0, 1.0, 0.1), 128, "dsa", 0.0, "best", 10),
}


def test_hmdc_is_the_default_and_equals_the_settings_defaults() -> None:
    assert DEFAULT_PROTOCOL == "hmdc"
    assert protocol_settings("hmdc") == EvalSettings()
    assert build_parser().parse_args(["x"]).protocol == "hmdc"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_protocol_optimiser_schedule_and_augmentation(name: str) -> None:
    epochs, rates, factors, batch, augment, cutmix_p, metric, every = EXPECTED[name]
    settings = protocol_settings(name)
    assert (settings.protocol, settings.epochs, settings.batch_size, settings.cutmix_p) == (
        name,
        epochs,
        batch,
        cutmix_p,
    )
    assert (settings.metric, settings.eval_every, settings.augment) == (metric, every, augment)

    # the optimiser: SGD, momentum 0.9, weight decay 5e-4, with the model's rate under this protocol
    for model, rate in zip(("convnet", "resnet18"), rates, strict=True):
        spec = training.resolve_model(ModelSpec(model), settings)
        assert training.cell_learning_rate(spec, settings, learned_lr=None) == pytest.approx(rate)
    optimizer = build_optimizer(
        torch.nn.Linear(2, 2).parameters(), 0.01, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 5e-4
    assert optimizer.defaults["nesterov"] is False

    # the schedule: the learning rate at epochs 0, E/2 - 1 and E/2
    at = [
        learning_rate_at(settings.lr_schedule, 1.0, e, epochs, settings.lr_decay)
        for e in (0, epochs // 2 - 1, epochs // 2)
    ]
    assert at == pytest.approx(list(factors))

    # the augmentation mode
    module = build_augment(settings.augment)
    assert type(module) is {"idc": DifferentiableAugment, "dsa": OneOpAugment}[augment]
    if augment == "idc":  # every image its own draw: two images of a batch get different parameters
        params = module.sample_params(2, generator=torch.Generator().manual_seed(0))
        assert not torch.equal(params.cutout_center[0], params.cutout_center[1])


def test_run_cell_trains_with_the_scheduled_rates(
    random_set: Path, fake_cifar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Record the learning rate and momentum state the optimiser has at each epoch of a real run_cell.
    seen: list[tuple[float, bool]] = []
    original = training._train_epoch

    def spy(model, optimizer, *args, **kwargs):  # type: ignore[no-untyped-def]
        has_momentum = any("momentum_buffer" in state for state in optimizer.state.values())
        seen.append((optimizer.param_groups[0]["lr"], has_momentum))
        return original(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(training, "_train_epoch", spy)
    cell = Cell(SetSpec.from_path(random_set), ModelSpec("convnet", width=8), seed=0)
    for name, schedule, restarts in (("dsa", "half", True), ("ddranking", "step:2", False)):
        seen.clear()
        settings = protocol_settings(name, epochs=4, batch_size=8, data_root=str(fake_cifar), lr_schedule=schedule)
        result = run_cell(cell, settings)
        assert [lr for lr, _ in seen] == pytest.approx([0.01, 0.01, 0.001, 0.001])
        # DC/DSA build a new optimiser at the decay: no momentum carried into epoch E/2 (index 2)
        assert [m for _, m in seen] == [False, True, not restarts, True]
        assert result.settings["protocol"] == name and result.settings["lr_schedule"] == schedule
        assert result.model["lr"] == 0.01 and result.set_info["lr"] == 0.01


def test_momentum_restart_only_for_half() -> None:
    assert restarts_momentum_at("half", 500, 1000) and not restarts_momentum_at("half", 499, 1000)
    assert not restarts_momentum_at("step:500", 500, 1000) and not restarts_momentum_at("constant", 500, 1000)


def test_dsa_mode_draws_one_op_per_batch() -> None:
    aug = OneOpAugment()
    generator = torch.Generator().manual_seed(0)
    ops_seen = set()
    for _ in range(60):
        op, p = aug.sample(2, 32, 32, generator=generator)
        ops_seen.add(op)
        used = {  # which op each image's parameters use (identity everywhere else)
            "color": (p.brightness != 0) | (p.saturation != 1) | (p.contrast != 1),
            "crop": (p.translation != 0).any(1),
            "cutout": p.cutout_size > 0,
            "flip": p.flip,
            "scale": (p.scale != 1).any(1),
            "rotate": p.angle != 0,
        }
        active = {name for name, mask in used.items() if bool(mask.any())}
        assert active <= {op}  # nothing of another op, for either image
        if op in ("color", "cutout", "scale", "rotate"):  # ops that change every image
            assert bool(used[op].all())  # both images of the batch got this op
            assert op != "color" or not torch.equal(p.brightness[0], p.brightness[1])  # parameters per image
    assert ops_seen == set(DSA_OPS)  # every op is drawn


def test_dsa_mode_applies_the_same_op_to_two_images_of_a_batch() -> None:
    # Two copies of one image: under "flip" either is flipped or not, under "crop" either is shifted by whole
    # pixels. What one image shows, the other shows too: the op is one for the batch.
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    batch = image.repeat(2, 1, 1, 1)
    aug = OneOpAugment(("flip", "cutout"))
    for seed in range(20):
        out = aug(batch, generator=torch.Generator().manual_seed(seed))
        zeroed = [bool((out[i] == 0).all(0).any()) for i in range(2)]
        flipped = [torch.equal(out[i], image[0].flip(-1)) for i in range(2)]
        # cutout zeroes a square in both images; flip never zeroes a pixel
        assert zeroed[0] == zeroed[1]
        assert not (any(zeroed) and any(flipped))


def test_dsa_crop_shifts_by_whole_pixels_within_four() -> None:
    aug = OneOpAugment(("crop",))
    _, params = aug.sample(500, 32, 32, generator=torch.Generator().manual_seed(0))
    pixels = params.translation * 32
    assert torch.allclose(pixels, pixels.round(), atol=1e-5)
    assert set(pixels.round().long().flatten().tolist()) == set(range(-4, 5))


def test_protocol_settings_refuse_unknown_names_and_settings() -> None:
    with pytest.raises(ValueError, match="`name` must be one of"):
        protocol_settings("mtt")
    with pytest.raises(ValueError, match="name no setting"):
        protocol_settings("dsa", learning_rate=0.1)
    with pytest.raises(ValueError, match="`lr_schedule` must be"):
        EvalSettings(lr_schedule="cosine")
    with pytest.raises(ValueError, match="`augment` must be one of"):
        EvalSettings(augment="autoaugment")
    assert EvalSettings(augment=False).augment == "none" and EvalSettings(augment=True).augment == "idc"


def test_help_lists_the_protocols(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    for name, protocol in PROTOCOLS.items():
        assert name in text and "".join(protocol.title.split()) in text
    assert "--lr-schedule" in text and "--augment" in text and "--cutmix-p" in text and "Default:hmdc" in text


def test_command_line_records_protocol_and_overrides(random_set: Path, fake_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    argv = [str(random_set), "--protocol", "dsa", "--epochs", "2", "--batch-size", "8", "--models", "convnet"]
    argv += ["--convnet-width", "8", "--seeds", "1", "--data-root", str(fake_cifar), "--out", str(out), "--quiet"]
    assert main([*argv, "--cutmix-p", "0.25"]) == 0
    stored = json.loads((out / "settings.json").read_text())
    assert stored["protocol"] == "dsa" and stored["lr_schedule"] == "half" and stored["augment"] == "dsa"
    assert stored["cutmix_p"] == 0.25 and stored["epochs"] == 2 and stored["lr"] == 0.01
    summary = json.loads((out / "results.json").read_text())
    assert summary["settings"]["protocol"] == "dsa"
    assert "protocol dsa" in (out / "results.md").read_text()

"""Pool entries with weights (``_ft``): a local weights file round-trips into an evaluation cell, backbone loaded and
head new; the paper's pretrained pool as a named option. Offline and tiny: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hmdc_modules.evaluation.train as training
from hmdc_modules.evaluate import build_parser
from hmdc_modules.evaluation import Cell, EvalSettings, ModelSpec, SetSpec, run_cell
from hmdc_modules.evaluation.cli import _model_specs
from hmdc_modules.evaluation.pool import PAPER_FT_POOL, parse_model_entry


def _start_state(cell: Cell, settings: EvalSettings, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """The model's tensors when the first epoch of ``run_cell`` starts."""
    seen: dict[str, torch.Tensor] = {}
    original = training._train_epoch

    def spy(model, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not seen:
            seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return original(model, *args, **kwargs)

    monkeypatch.setattr(training, "_train_epoch", spy)
    run_cell(cell, settings)
    monkeypatch.undo()
    return seen


@pytest.mark.parametrize(("name", "head"), [("convnet", "classifier."), ("test_vit", "head.")])
def test_weights_file_round_trips_through_an_ft_entry(
    name: str, head: str, random_set: Path, fake_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(123)
    source = ModelSpec(name).build(num_classes=2)  # the "pretrained" model: another seed than the cell's
    file = tmp_path / f"{name}.pt"
    torch.save(source.state_dict(), file)

    entry = parse_model_entry(f"{name}@weights={file}")
    assert entry == {"name": name, "weights": str(file), "label": f"{name}_ft"}
    spec = ModelSpec(**entry)
    settings = EvalSettings(epochs=1, eval_every=0, batch_size=8, data_root=str(fake_cifar))
    start = _start_state(Cell(SetSpec.from_path(random_set), spec, seed=0), settings, monkeypatch)
    scratch = _start_state(Cell(SetSpec.from_path(random_set), ModelSpec(name), seed=0), settings, monkeypatch)

    expected = source.state_dict()
    backbone = [k for k in expected if not k.startswith(head)]
    heads = [k for k in expected if k.startswith(head)]
    assert backbone and heads
    for key in backbone:  # the backbone starts as the file's tensors
        assert torch.equal(start[key], expected[key]), key
        assert not torch.equal(scratch[key], expected[key]) or expected[key].unique().numel() <= 1, key
    for key in heads:  # the head is new: not the file's
        assert not torch.equal(start[key], expected[key]), key
    result = run_cell(Cell(SetSpec.from_path(random_set), spec, seed=0), settings)
    assert result.model["weights"] == str(file) and result.model["label"] == f"{name}_ft"


def test_ft_entries_and_the_paper_pretrained_pool() -> None:
    assert parse_model_entry("resnet18_ft") == {"name": "resnet18", "pretrained": True, "label": "resnet18_ft"}
    assert parse_model_entry("resnet18_scratch") == {"name": "resnet18", "label": "resnet18_scratch"}
    assert parse_model_entry("resnet18@pretrained=a1_in1k")["pretrained"] == "resnet18.a1_in1k"
    args = build_parser().parse_args(["x", "--models", "paper-ft"])
    specs = _model_specs(build_parser(), args)
    assert [s.display_name for s in specs] == list(PAPER_FT_POOL)
    convnet, *pretrained = specs
    assert convnet.pretrained is None and convnet.image_size == 32 and convnet.learning_rate == 1e-2
    assert all(s.pretrained is True and s.image_size == 224 for s in pretrained)
    # the paper's per-model rates: ResNet18/50 1e-3, ResNet101 1e-4, ViT-Tiny/Small 1e-3, ViT-Base 1e-4
    assert [s.learning_rate for s in pretrained] == [1e-3, 1e-3, 1e-4, 1e-3, 1e-3, 1e-4]
    assert specs[1].to_dict()["pretrained"] is True and "pretrained" not in convnet.to_dict()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("convnet_ft", "the ConvNet has no hub weights"),
        ("resnet18@weights=a.pt@pretrained=x", "exclusive"),
        ("resnet18@weight=a.pt", "options are @weights=FILE"),
        ("resnet18@label=a@label=b", "given twice"),
        ("not_a_model_ft", "must be 'convnet' or a timm model name"),
    ],
)
def test_bad_entries_give_one_line(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_model_entry(entry)


def test_hub_weights_offline_stop_before_anything_is_written(
    random_set: Path, fake_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from hmdc_modules.evaluate import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    out = tmp_path / "eval"
    with pytest.raises(SystemExit) as info:
        main(
            [
                str(random_set),
                "--models",
                "resnet18_ft",
                "--epochs",
                "1",
                "--data-root",
                str(fake_cifar),
                "--out",
                str(out),
            ]
        )
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "resnet18" in lines[0] and not out.exists()

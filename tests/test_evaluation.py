"""The cross-architecture evaluation suite, at a tiny size on generated data (``fake_cifar``: 2 classes)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

import hmdc_modules.evaluation.train as training
from hmdc_modules.condensation import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    load_cifar10,
    normalize,
    read_synthetic_set,
    save_synthetic_set,
)
from hmdc_modules.evaluate import main
from hmdc_modules.evaluation import (
    Cell,
    CellResult,
    EvalSettings,
    ModelSpec,
    SetSpec,
    default_learning_rate,
    format_markdown,
    make_random_real_set,
    mean_std,
    model_family,
    plan_cells,
    run_cell,
    run_suite,
    sample_per_class,
    summarize,
    write_csv,
    write_json,
)
from hmdc_modules.evaluation.train import _batches

TINY_CNN = ModelSpec("convnet", width=8)
TINY_VIT = ModelSpec("test_vit")


def tiny_settings(root: Path, **changes: object) -> EvalSettings:
    values: dict[str, object] = {"epochs": 2, "eval_every": 1, "batch_size": 8, "data_root": str(root)}
    values.update(changes)
    return EvalSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def packed_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multi-formation set file (factor 2): 1 stored image per class, 4 decoded."""
    path = tmp_path_factory.mktemp("packed") / "packed_ipc1.pt"
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 32, generator=generator)
    save_synthetic_set(
        path, images, torch.tensor([0, 1]), mean=CIFAR10_MEAN, std=CIFAR10_STD, factor=2, ipc=1, iteration=3
    )
    return path


def fake_result(
    set_name: str, model: str, family: str, seed: int, best: float, final: float, group: str | None = None
) -> CellResult:
    return CellResult(
        set_name=set_name,
        set_path=f"{set_name}.pt",
        set_sha256="0" * 64,
        model={"name": model, "label": model, "family": family},
        seed=seed,
        classes=[0, 1],
        num_train=4,
        num_test=6,
        epochs=10,
        final_accuracy=final,
        best_accuracy=best,
        best_epoch=5,
        history=[(5, best), (10, final)],
        final_loss=1.0,
        seconds=0.0,
        set_group=group,
    )


# ----------------------------------------------------------------------------------------------------------------
# The pool
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rate"),
    [
        ("convnet", 1e-2),
        ("resnet18", 1e-3),
        ("resnet50", 1e-3),
        ("resnet101", 1e-4),
        ("vit_tiny_patch16_224", 1e-3),
        ("vit_small_patch16_224", 1e-3),
        ("vit_base_patch16_224", 1e-4),
        ("resnet18.a1_in1k", 1e-3),
        ("efficientnet_b0", 1e-3),
        ("test_vit", 1e-3),
    ],
)
def test_default_learning_rates_follow_the_protocol(name: str, rate: float) -> None:
    assert default_learning_rate(name) == rate


def test_model_specs_resolve_family_rate_and_patch() -> None:
    assert model_family("vit_tiny_patch16_224") == "vit" and model_family("resnet50") == "cnn"
    assert model_family("convnet") == "cnn"
    vit = ModelSpec("vit_tiny_patch16_224")
    assert vit.effective_patch_size == 4 and vit.learning_rate == 1e-3
    assert ModelSpec("vit_tiny_patch16_224", image_size=224).effective_patch_size is None
    custom = ModelSpec("resnet101", lr=0.05, label="r101-fast")
    assert custom.to_dict()["lr"] == 0.05 and custom.display_name == "r101-fast"
    assert ModelSpec.from_dict(vit.to_dict()).to_dict() == vit.to_dict()
    model = ModelSpec("test_vit").build()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


# ----------------------------------------------------------------------------------------------------------------
# Baseline
# ----------------------------------------------------------------------------------------------------------------


def test_random_baseline_draws_ipc_real_images_per_class_deterministically(fake_cifar: Path, tmp_path: Path) -> None:
    first = make_random_real_set(fake_cifar, tmp_path / "a", ipc=3, seed=0, progress=False)
    again = make_random_real_set(fake_cifar, tmp_path / "b.pt", ipc=3, seed=0, progress=False)
    other = make_random_real_set(fake_cifar, tmp_path / "c", ipc=3, seed=1, progress=False)
    assert first == tmp_path / "a" / "synthetic.pt" and again == tmp_path / "b.pt"
    a, b, c = (read_synthetic_set(p) for p in (first, again, other))
    assert a.labels.tolist() == [0, 0, 0, 1, 1, 1] and (a.factor, a.ipc, a.iteration) == (1, 3, 0)
    assert torch.equal(a.images, b.images) and a.extra["source_indices"] == b.extra["source_indices"]
    assert a.extra["source_indices"] != c.extra["source_indices"]
    assert a.extra["baseline"] == "random_real" and c.extra["seed"] == 1
    real, labels = load_cifar10(fake_cifar, "train", progress=False)
    picked = torch.tensor(a.extra["source_indices"])
    assert len(set(picked.tolist())) == 6 and labels[picked].tolist() == a.labels.tolist()
    assert torch.allclose(a.images, normalize(real[picked], CIFAR10_MEAN, CIFAR10_STD))


def test_random_baseline_from_the_c_half_draws_only_c_images(fake_cifar: Path, tmp_path: Path) -> None:
    """Protocol v2's random arm: ``subset="C"`` draws from the condensation half only; indices stay into the split."""
    from hmdc_modules.condensation.splits import subset_indices

    _, labels = load_cifar10(fake_cifar, "train", progress=False)
    c_half = set(subset_indices(labels, "C").tolist())
    for seed in range(4):
        path = make_random_real_set(fake_cifar, tmp_path / f"c{seed}.pt", ipc=3, seed=seed, progress=False, subset="C")
        drawn = read_synthetic_set(path).extra
        assert set(drawn["source_indices"]) <= c_half and drawn["subset"] == "C"
    with pytest.raises(ValueError, match="`subset`"):
        make_random_real_set(fake_cifar, tmp_path / "q.pt", ipc=1, progress=False, subset="Q")


def test_sample_per_class() -> None:
    labels = torch.tensor([2, 0, 2, 0, 2, 0, 2])
    picked = sample_per_class(labels, 2, seed=5)
    assert labels[picked].tolist() == [0, 0, 2, 2] and len(set(picked.tolist())) == 4
    assert torch.equal(picked, sample_per_class(labels, 2, seed=5))
    with pytest.raises(ValueError, match="exceeds the 3 images of class 0"):
        sample_per_class(labels, 4)
    with pytest.raises(TypeError, match="integer dtype"):
        sample_per_class(labels.float(), 1)


# ----------------------------------------------------------------------------------------------------------------
# One cell
# ----------------------------------------------------------------------------------------------------------------


def test_final_and_best_accuracy_are_kept_apart(
    random_set: Path, fake_cifar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = iter([30.0, 50.0, 40.0, 45.0])
    monkeypatch.setattr(training, "evaluate_accuracy", lambda *args, **kwargs: next(scripted))
    cell = Cell(SetSpec.from_path(random_set), TINY_CNN, seed=0)
    result = run_cell(cell, tiny_settings(fake_cifar, epochs=5, eval_every=2))
    # tested at epochs 2 and 4 (every 2) and after the last one, 5
    assert result.history == [(2, 30.0), (4, 50.0), (5, 40.0)]
    assert (result.final_accuracy, result.best_accuracy, result.best_epoch) == (40.0, 50.0, 4)

    scripted = iter([45.0])
    only_final = run_cell(cell, tiny_settings(fake_cifar, epochs=2, eval_every=0))
    assert only_final.history == [(2, 45.0)] and only_final.best_accuracy == only_final.final_accuracy == 45.0


def test_run_cell_is_a_pure_function_of_cell_and_settings(random_set: Path, fake_cifar: Path) -> None:
    cell = Cell(SetSpec.from_path(random_set), TINY_CNN, seed=3)
    settings = tiny_settings(fake_cifar)
    state = torch.get_rng_state()
    first, second = run_cell(cell, settings), run_cell(cell, settings)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    assert first.history == second.history and first.final_loss == second.final_loss
    assert first.classes == [0, 1] and first.num_train == 4 and first.num_test == 6
    assert first.model == TINY_CNN.to_dict() and first.settings == settings.to_dict()
    assert all(0.0 <= a <= 100.0 for _, a in first.history)


def test_run_cell_decodes_multi_formation_and_resizes(packed_set: Path, fake_cifar: Path) -> None:
    small = ModelSpec("convnet", width=8, image_size=16)
    result = run_cell(Cell(SetSpec.from_path(packed_set), small, seed=0), tiny_settings(fake_cifar, epochs=1))
    assert result.num_train == 8 and result.set_name == "packed_ipc1" and result.model["image_size"] == 16
    bn = run_cell(Cell(SetSpec.from_path(packed_set), ModelSpec("test_resnet"), seed=0), tiny_settings(fake_cifar))
    assert bn.family == "cnn" and len(bn.history) == 2


def test_batches_merge_a_lone_last_image() -> None:
    assert [len(b) for b in _batches(torch.arange(9), 4)] == [4, 5]
    assert [len(b) for b in _batches(torch.arange(8), 4)] == [4, 4]
    assert [len(b) for b in _batches(torch.arange(1), 4)] == [1]


# ----------------------------------------------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------------------------------------------


def test_suite_end_to_end_writes_every_report(
    random_set: Path, packed_set: Path, fake_cifar: Path, tmp_path: Path
) -> None:
    out, lines = tmp_path / "eval", []
    report = run_suite(
        [random_set, SetSpec.from_path(packed_set, "packed")],
        [TINY_CNN, TINY_VIT],
        [0, 1],
        tiny_settings(fake_cifar),
        out,
        device="cpu",
        progress=False,
        log=lines.append,
    )
    assert (report.trained, report.skipped, len(report.results)) == (8, 0, 8)
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(f"{r.key}.json" for r in report.results)
    assert {k: p.name for k, p in report.files.items()} == {
        "markdown": "results.md",
        "csv": "results.csv",
        "json": "results.json",
        "chart": "accuracy.png",
    }
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "settings.json").read_text())["epochs"] == 2
    markdown = (out / "results.md").read_text()
    for text in ("Best test accuracy", "Final-epoch test accuracy", random_set.name, "packed", "test_vit"):
        assert text in markdown
    for text in ("CNN average", "ViT average", "Overall average", "ddof = 1"):
        assert text in markdown
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * (2 + 3)  # per set: two models and three averages
    document = json.loads((out / "results.json").read_text())
    assert len(document["cells"]) == 8 and document["settings"]["eval_every"] == 1
    vit_cells = [r for r in report.results if r.model_label == "test_vit"]
    assert vit_cells and all(r.family == "vit" for r in vit_cells)
    assert any("final" in line and "best" in line for line in lines)


def test_suite_resumes_and_refuses_changed_settings(
    random_set: Path, packed_set: Path, fake_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_run_cell = training.run_cell

    def counting(cell: Cell, *args: object, **kwargs: object) -> CellResult:
        calls.append(cell.key)
        if len(calls) == 2 and crash:
            raise KeyboardInterrupt  # an interruption in the middle of the second cell
        return real_run_cell(cell, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(training, "run_cell", counting)
    out, settings = tmp_path / "eval", tiny_settings(fake_cifar, epochs=1)

    def suite(seeds: list[int], models: list[ModelSpec] | None = None, s: EvalSettings = settings):
        return run_suite([random_set], models or [TINY_CNN], seeds, s, out, device="cpu", progress=False, log=print)

    crash = True
    with pytest.raises(KeyboardInterrupt):
        suite([0, 1, 2])
    assert len(list((out / "cells").glob("*.json"))) == 1 and not list((out / "cells").glob(".*"))
    crash = False
    calls.clear()
    report = suite([0, 1, 2])
    assert len(calls) == 2 and (report.trained, report.skipped) == (2, 1)
    calls.clear()
    report = suite([0, 1, 2])
    assert calls == [] and report.skipped == 3
    report = suite([0, 1, 2, 3])  # one more seed: only it trains
    assert len(calls) == 1 and len(report.results) == 4

    with pytest.raises(ValueError, match=r"other settings \(epochs: 1 -> 2"):
        suite([0], s=tiny_settings(fake_cifar, epochs=2))
    with pytest.raises(ValueError, match=r"another recipe \(lr: 0.01 -> 0.1\)"):
        suite([0], models=[ModelSpec("convnet", width=8, lr=0.1)])
    # other settings that do not change results are fine: where the data lives, the test batch size
    suite([0], s=tiny_settings(fake_cifar, epochs=1, test_batch_size=3, data_root=str(fake_cifar) + "/"))

    changed = tmp_path / random_set.name
    changed.mkdir()
    stored = read_synthetic_set(random_set / "synthetic.pt")
    save_synthetic_set(
        changed / "synthetic.pt",
        stored.images + 1,
        stored.labels,
        mean=stored.mean,
        std=stored.std,
        factor=1,
        ipc=2,
        iteration=0,
    )
    with pytest.raises(ValueError, match="changed since"):
        run_suite([changed], [TINY_CNN], [0], settings, out, device="cpu", progress=False, log=print)


def test_plan_cells_splits_over_ranks() -> None:
    sets = [SetSpec("a", "a.pt"), SetSpec("b", "b.pt")]
    cells = plan_cells(sets, [TINY_CNN, TINY_VIT], [0, 1, 2])
    assert len(cells) == 12 and cells[0].key == "a--convnet--seed0" and cells[-1].key == "b--test_vit--seed2"
    shards = [cells[rank::3] for rank in range(3)]
    assert sorted(c.key for shard in shards for c in shard) == sorted(c.key for c in cells)


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------


def test_table_arithmetic_against_hand_computed_values(tmp_path: Path) -> None:
    results = [
        fake_result("s", "convnet", "cnn", 0, best=50.0, final=48.0),
        fake_result("s", "convnet", "cnn", 1, best=52.0, final=50.0),
        fake_result("s", "convnet", "cnn", 2, best=57.0, final=52.0),
        fake_result("s", "resnet18", "cnn", 0, best=40.0, final=39.0),
        fake_result("s", "resnet18", "cnn", 1, best=44.0, final=41.0),
        fake_result("s", "vit", "vit", 0, best=30.0, final=28.0),
        fake_result("t", "convnet", "cnn", 0, best=20.0, final=10.0),
    ]
    rows = {(r.set_name, r.model): r for r in summarize(results)}
    convnet = rows["s", "convnet"]
    assert (convnet.best_mean, convnet.final_mean, convnet.num_seeds) == (53.0, 50.0, 3)
    assert convnet.best_std == pytest.approx(math.sqrt(13.0))  # ((-3)^2 + (-1)^2 + 4^2) / (3 - 1)
    assert convnet.final_std == pytest.approx(2.0)  # (4 + 0 + 4) / 2
    resnet = rows["s", "resnet18"]
    assert (resnet.best_mean, resnet.final_mean) == (42.0, 40.0)
    assert resnet.best_std == pytest.approx(math.sqrt(8.0)) and resnet.final_std == pytest.approx(math.sqrt(2.0))
    vit = rows["s", "vit"]
    assert (vit.best_mean, vit.best_std, vit.final_std, vit.num_seeds) == (30.0, None, None, 1)
    cnn, vits, overall = rows["s", "CNN average"], rows["s", "ViT average"], rows["s", "Overall average"]
    assert (cnn.best_mean, cnn.final_mean, cnn.num_models) == (47.5, 45.0, 2)
    assert (vits.best_mean, vits.final_mean, vits.num_models) == (30.0, 28.0, 1)
    assert overall.best_mean == pytest.approx(125.0 / 3) and overall.final_mean == pytest.approx(118.0 / 3)
    assert ("t", "ViT average") not in rows and rows["t", "Overall average"].best_mean == 20.0

    markdown = format_markdown(summarize(results))
    assert "| convnet | CNN | 53.00 ± 3.61 | 20.00 ± n/a |" in markdown
    assert "| vit | ViT | 30.00 ± n/a | - |" in markdown
    assert "| **Overall average** | all | **41.67** | **20.00** |" in markdown
    assert "| convnet | CNN | 50.00 ± 2.00 | 10.00 ± n/a |" in markdown  # the final-epoch table
    with open(write_csv(summarize(results), tmp_path / "r.csv"), newline="") as handle:
        csv_rows = {(r["set_name"], r["model"]): r for r in csv.DictReader(handle)}
    assert csv_rows["s", "vit"]["best_std"] == "" and float(csv_rows["s", "convnet"]["best_mean"]) == 53.0
    document = json.loads(write_json(summarize(results), results, tmp_path / "r.json").read_text())
    assert document["summary"][2]["best_std"] is None and len(document["cells"]) == 7


def test_groups_pool_sets_into_one_column_against_hand_computed_values(tmp_path: Path) -> None:
    # method "m" condensed with two seeds (sets m0, m1), each trained with two seeds; "r" is one set
    results = [
        fake_result("m0", "convnet", "cnn", 0, best=50.0, final=40.0, group="m"),
        fake_result("m0", "convnet", "cnn", 1, best=52.0, final=42.0, group="m"),
        fake_result("m1", "convnet", "cnn", 0, best=60.0, final=44.0, group="m"),
        fake_result("m1", "convnet", "cnn", 1, best=58.0, final=46.0, group="m"),
        fake_result("m0", "vit", "vit", 0, best=30.0, final=30.0, group="m"),
        fake_result("m1", "vit", "vit", 0, best=34.0, final=31.0, group="m"),
        fake_result("r", "convnet", "cnn", 0, best=20.0, final=10.0),
    ]
    rows = {(r.set_name, r.model): r for r in summarize(results)}
    assert sorted({name for name, _ in rows}) == ["m", "r"]
    convnet = rows["m", "convnet"]
    assert (convnet.best_mean, convnet.num_seeds, convnet.num_sets) == (55.0, 4, 2)
    # deviations -5, -3, 5, 3: sum of squares 68, over n - 1 = 3
    assert convnet.best_std == pytest.approx(math.sqrt(68.0 / 3.0))
    assert convnet.final_std == pytest.approx(math.sqrt(20.0 / 3.0))  # deviations -3, -1, 1, 3
    vit = rows["m", "vit"]
    assert (vit.best_mean, vit.num_seeds) == (32.0, 2) and vit.best_std == pytest.approx(math.sqrt(8.0))
    assert rows["m", "Overall average"].best_mean == pytest.approx(43.5)
    assert (rows["r", "convnet"].num_sets, rows["r", "convnet"].best_std) == (1, None)

    per_set = {(r.set_name, r.model): r for r in summarize(results, pool_groups=False)}
    assert sorted({name for name, _ in per_set}) == ["m0", "m1", "r"]
    assert per_set["m1", "convnet"].best_mean == 59.0 and per_set["m1", "convnet"].num_sets == 1
    with pytest.raises(TypeError, match="pool_groups"):
        summarize(results, pool_groups="yes")  # type: ignore[arg-type]

    restored = CellResult.from_dict(results[0].to_dict())
    assert restored.group == "m" and restored == results[0]
    legacy = results[-1].to_dict()
    del legacy["set_group"]  # a record written before groups existed
    assert CellResult.from_dict(legacy).group == "r"
    with pytest.raises(TypeError, match="set_group"):
        CellResult.from_dict(results[0].to_dict() | {"set_group": 3})


def test_suite_pools_groups_and_relabels_stored_cells(random_set: Path, fake_cifar: Path, tmp_path: Path) -> None:
    other = tmp_path / "random_seed1"
    make_random_real_set(fake_cifar, other, ipc=2, seed=1, progress=False)
    out, settings = tmp_path / "eval", tiny_settings(fake_cifar, epochs=1)
    sets = [SetSpec.from_path(random_set, "r0", group="random"), SetSpec.from_path(other, "r1", group="random")]
    report = run_suite(sets, [TINY_CNN], [0], settings, out, device="cpu", progress=False, log=print)
    assert [(r.set_name, r.num_sets, r.num_seeds) for r in report.rows if r.kind == "model"] == [("random", 2, 2)]
    assert report.files["markdown_by_set"].name == "results_by_set.md"
    by_set = report.files["markdown_by_set"].read_text()
    assert "| r0 | r1 |" in by_set and "every seed of every set" in (out / "results.md").read_text()
    accuracies = [r.best_accuracy for r in report.results]
    assert report.rows[0].best_mean == pytest.approx(sum(accuracies) / 2)

    relabelled = [SetSpec.from_path(random_set, "r0", group="a"), SetSpec.from_path(other, "r1", group="b")]
    report = run_suite(relabelled, [TINY_CNN], [0], settings, out, device="cpu", progress=False, log=print)
    assert report.trained == 0 and [r.set_name for r in report.rows if r.kind == "model"] == ["a", "b"]
    assert json.loads((out / "cells" / "r1--convnet--seed0.json").read_text())["set_group"] == "b"
    assert "markdown_by_set" not in report.files and not (out / "results_by_set.md").exists()
    with pytest.raises(ValueError, match="`group` must not be empty"):
        SetSpec("x", "x.pt", group=" ")
    with pytest.raises(TypeError, match="`group` must be a str"):
        SetSpec("x", "x.pt", group=1)  # type: ignore[arg-type]


def test_mean_std() -> None:
    assert mean_std([2.0, 4.0]) == (3.0, pytest.approx(math.sqrt(2.0)))
    assert mean_std([7.0]) == (7.0, None)
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])
    with pytest.raises(TypeError, match="numbers"):
        mean_std(["1"])  # type: ignore[list-item]


# ----------------------------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument(random_set: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`name` must be 'convnet' or a timm model name, got 'no_such_net'"):
        ModelSpec("no_such_net")
    with pytest.raises(TypeError, match="`name`"):
        ModelSpec(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`patch_size` only applies"):
        ModelSpec("resnet18", patch_size=4)
    with pytest.raises(ValueError, match="`width` only applies"):
        ModelSpec("test_vit", width=8)
    with pytest.raises(ValueError, match="`lr` must be a finite number > 0, got -1"):
        ModelSpec("convnet", lr=-1.0)
    with pytest.raises(TypeError, match="`lr` must be a float"):
        ModelSpec("convnet", lr="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`epochs` must be >= 1, got 0"):
        EvalSettings(epochs=0)
    with pytest.raises(TypeError, match="`epochs` must be an int"):
        EvalSettings(epochs=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`cutmix_p` must be in"):
        EvalSettings(cutmix_p=2.0)
    with pytest.raises(ValueError, match="set names must be unique"):
        plan_cells([SetSpec("a", "x.pt"), SetSpec("a", "y.pt")], [TINY_CNN], [0])
    with pytest.raises(ValueError, match="model labels must be unique"):
        plan_cells([SetSpec("a", "x.pt")], [TINY_CNN, ModelSpec("convnet")], [0])
    with pytest.raises(ValueError, match="seeds must be unique"):
        plan_cells([SetSpec("a", "x.pt")], [TINY_CNN], [1, 1])
    with pytest.raises(ValueError, match="`seeds` must not be empty"):
        plan_cells([SetSpec("a", "x.pt")], [TINY_CNN], [])
    with pytest.raises(TypeError, match="`models` must hold ModelSpec"):
        plan_cells([SetSpec("a", "x.pt")], ["convnet"], [0])  # type: ignore[list-item]
    with pytest.raises(FileNotFoundError, match="neither a synthetic-set file nor a run folder"):
        SetSpec.from_path(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"without 'synthetic\.pt'"):
        SetSpec.from_path(tmp_path)
    with pytest.raises(ValueError, match="at least one CellResult"):
        summarize([])
    with pytest.raises(TypeError, match="`results` must hold CellResult"):
        summarize([{"best": 1.0}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="repeats the cell"):
        summarize([fake_result("s", "m", "cnn", 0, 1.0, 1.0)] * 2)
    with pytest.raises(TypeError, match="`settings` must be an EvalSettings"):
        run_suite([random_set], [TINY_CNN], [0], {"epochs": 1}, tmp_path / "o")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no weights file"):
        run_suite([random_set], [ModelSpec("convnet", weights=str(tmp_path / "w.pt"))], [0], EvalSettings(), tmp_path)


def test_missing_data_gives_the_library_error(random_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    nowhere = tmp_path / "nowhere"
    settings = EvalSettings(epochs=1, data_root=str(nowhere))
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        run_suite([random_set], [TINY_CNN], [0], settings, tmp_path / "out", device="cpu", progress=False)
    assert "test" in str(info.value)  # the split it looked for
    assert not list((tmp_path / "out").glob("cells/*.json"))
    args = [str(random_set), "--models", "convnet", "--data-root", str(nowhere), "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and str(nowhere) in err
    assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["random", "--data-root", str(nowhere), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()  # nothing left behind


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def test_command_line(fake_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    baseline = tmp_path / "random_ipc1"
    assert main(["random", "--ipc", "1", "--seed", "4", "--data-root", str(fake_cifar), "--out", str(baseline)]) == 0
    assert read_synthetic_set(baseline / "synthetic.pt").labels.tolist() == [0, 1]
    half = tmp_path / "random_c.pt"
    assert main(["random", "--subset", "C", "--data-root", str(fake_cifar), "--out", str(half), "--quiet"]) == 0
    assert read_synthetic_set(half).extra["subset"] == "C"
    out = tmp_path / "eval"
    argv = [str(baseline), "--name", "rnd", "--models", "convnet", "--convnet-width", "8", "--lr", "convnet=0.05"]
    argv += ["--seeds", "5,7", "--epochs", "2", "--eval-every", "1", "--data-root", str(fake_cifar)]
    argv += ["--out", str(out), "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 cells trained, 0 already done" in printed and "rnd / convnet / seed 7" in printed
    cell = json.loads((out / "cells" / "rnd--convnet--seed5.json").read_text())
    assert cell["model"]["lr"] == 0.05 and cell["model"]["width"] == 8 and cell["epochs"] == 2
    assert main(argv) == 0 and "0 cells trained, 2 already done" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "random --ipc 1 --seed 0" in capsys.readouterr().out
    for bad, message in (
        (["x", "--seeds", "0"], "seed count must be >= 1"),
        ([str(baseline), "--name", "a", "--name", "b"], "--name must be given once per set"),
        ([str(baseline), "--group", "a", "--group", "b"], "--group must be given once per set"),
        ([str(baseline), "--models", "convnet", "--lr", "resnet18=0.1"], "not in --models"),
        ([str(baseline), "--models", "nonet", "--out", str(tmp_path / "o")], "timm model name, got 'nonet'"),
        ([str(tmp_path / "none")], "neither a synthetic-set file nor a run folder"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(bad)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_stream_seeds_are_those_of_earlier_versions() -> None:
    # the data order and augmentation streams were seeded with (seed * 1_000_003 + stream) % (2**63 - 1), stream 1
    # and 2: the kit's one seed mixer must give the same seeds, so that stored results stay bitwise reproducible
    from hmdc_modules.condensation import derive_seed

    for seed in (0, 1, 158, 700, 2**31 - 1, 2**40, 2**62):
        for stream in (1, 2):
            expected = (seed * 1_000_003 + stream) % (2**63 - 1)
            assert derive_seed(seed, stream - 1, modulus=training._SEED_MODULUS) == expected


def test_an_interrupted_command_exits_130_with_one_line(
    random_set: Path, fake_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import signal

    from hmdc_modules.distributed import Interrupted

    def interrupted(*args: object, **kwargs: object) -> CellResult:
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(training, "run_cell", interrupted)
    out = tmp_path / "eval"
    argv = [str(random_set), "--models", "convnet", "--convnet-width", "8", "--epochs", "1", "--seeds", "1"]
    argv += ["--data-root", str(fake_cifar), "--out", str(out), "--device", "cpu", "--quiet"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted (SIGINT)" in err and str(out) in err and "same command" in err
    monkeypatch.undo()
    assert main(argv) == 0 and "1 cells trained" in capsys.readouterr().out  # and the same command continues
